/**
 * The study's QEMU engine: the image vdisk made (byte for byte the one qemu-img makes) is served
 * by qemu-nbd with the combination's format and cache mode, and the workloads run through vdisk's
 * NBD client, so the numbers are QEMU's block layer on this storage, driven by the very same
 * request streams. vdisk's client adds no cache of its own: the cache mode is qemu-nbd's.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import type { BlockBackend } from '../../block/backend.js';
import type { CacheModeName } from '../../block/cache-mode.js';
import { VdiskError } from '../../block/errors.js';
import { openImage } from '../../engine/open.js';
import type { FormatName } from '../../format/format.js';

/** How long qemu-nbd may take to start listening. */
const START_MS = 10_000;

/** True when qemu-nbd is on PATH. */
export function qemuNbdInstalled(): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => {
    if (!dir) return false;
    try {
      accessSync(path.join(dir, 'qemu-nbd'), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export interface ServedImage {
  backend: BlockBackend;
  /** Closes the client, then stops qemu-nbd and waits for it to exit. */
  release(): Promise<void>;
}

function exitOf(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    else proc.once('exit', () => resolve());
  });
}

/** Serves `file` with qemu-nbd (a private socket in `workdir`) and opens it through vdisk's client. */
export async function openThroughQemuNbd(
  file: string,
  format: FormatName,
  cache: CacheModeName,
  workdir: string,
): Promise<ServedImage> {
  const socket = `${file}.sock`;
  // -t: a connection that ends does not end the server; --discard=unmap: trims free space, as vdisk's do.
  const args = ['-f', format, `--cache=${cache}`, '--discard=unmap', '-t', '-k', socket, file];
  const proc = spawn('qemu-nbd', args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: workdir });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const spawned = new Promise<void>((resolve, reject) => {
    proc.once('spawn', () => resolve());
    proc.once('error', (err) =>
      reject(new VdiskError('ENOTSUP', `qemu-nbd could not be started: ${err.message}`, { cause: err })),
    );
  });
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await exitOf(proc);
  };
  try {
    await spawned;
    const uri = `nbd+unix:///?socket=${socket}`;
    const deadline = Date.now() + START_MS;
    for (;;) {
      try {
        const backend = await openImage(uri, { format: 'raw', cache: 'writeback' });
        return {
          backend,
          release: async () => {
            try {
              await backend.close();
            } finally {
              await stop();
            }
          },
        };
      } catch (err) {
        const exited = proc.exitCode !== null || proc.signalCode !== null;
        if (exited) {
          const why = stderr.trim().split('\n').pop() ?? '';
          // qemu-nbd refusing a cache mode the filesystem cannot do is the same "unsupported" as vdisk's.
          const code = /O_DIRECT|Invalid argument|not supported/i.test(why) ? 'ENOTSUP' : 'EIO';
          throw new VdiskError(code, `qemu-nbd stopped: ${why || `exit status ${proc.exitCode}`}`);
        }
        if (Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
}
