/**
 * NBD servers for the benchmarks, started on a Unix socket with the same image, format and cache
 * mode: vdisk serve, qemu-nbd, and (raw only) nbdkit's file plugin with the filter that gives it
 * the same durability as the cache mode.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The executable npm installs (it sizes libuv's thread pool, then loads dist/src/cli/main.js). */
const VDISK_MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/vdisk.cjs');

export type ServerName = 'vdisk' | 'qemu-nbd' | 'nbdkit';

export interface Server {
  uri: string;
  /** The server's process id (for its memory figures). */
  pid: number;
  stop(): Promise<void>;
}

async function waitConnectable(socket: string, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error('the server exited');
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(socket);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no server on ${socket}`);
}

/**
 * nbdkit's file plugin has no O_DIRECT (cache=none evicts pages after each request), so for
 * none and directsync it is the nearest thing, not the same thing. The fua filter makes every
 * write durable (writethrough, directsync) or ignores flushes (unsafe).
 */
function nbdkitArgs(image: string, cache: string, socket: string): string[] {
  const args = ['--foreground', '--exit-with-parent', '-U', socket, '-t', '16'];
  if (cache === 'writethrough' || cache === 'directsync') args.push('--filter=fua');
  if (cache === 'unsafe') args.push('--filter=fua');
  args.push('file', image);
  if (cache === 'none' || cache === 'directsync') args.push('cache=none');
  if (cache === 'writethrough' || cache === 'directsync') args.push('fuamode=force');
  if (cache === 'unsafe') args.push('fuamode=discard');
  return args;
}

export async function startServer(
  which: ServerName,
  image: string,
  format: string,
  cache: string,
  socket: string,
  extraEnv: Record<string, string> = {},
): Promise<Server> {
  // A socket file left by an earlier server would make the new one fail to listen.
  await rm(socket, { force: true });
  // qemu-nbd and vdisk: persistent, several clients allowed (the probe connection counts as one).
  const args = ['-f', format, `--cache=${cache}`, '-t', '-e', '4', '-k', socket, image];
  let proc: ChildProcess;
  if (which === 'qemu-nbd') proc = spawn('qemu-nbd', args, { stdio: 'ignore' });
  else if (which === 'nbdkit') proc = spawn('nbdkit', nbdkitArgs(image, cache, socket), { stdio: 'ignore' });
  else {
    proc = spawn(process.execPath, [VDISK_MAIN, 'serve', ...args], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, ...extraEnv },
    });
  }
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  await waitConnectable(socket, proc);
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    pid: proc.pid!,
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}
