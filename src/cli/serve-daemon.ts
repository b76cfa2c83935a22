/**
 * qemu-nbd's --fork and --pid-file. --fork starts `vdisk serve` again with the same arguments,
 * marked in its environment as the forked server (which then ignores --fork), in its own session with its output piped to this process: its error messages are passed on, and
 * this process exits once the server prints that it listens (status 0), or with the server's
 * status if it fails first. From then on the server writes nothing (qemu-nbd's daemon sends
 * its output to /dev/null).
 */
import { spawn } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { fromSystemError } from '../block/errors.js';
import type { CliStreams } from './args.js';

/** Set in the environment of the server --fork starts. */
const DAEMON_ENV = 'VDISK_SERVE_DAEMON';

/** This process is the server a `vdisk serve --fork` started. */
export function isForkedServer(): boolean {
  return process.env[DAEMON_ENV] === '1';
}

/** After the server has said it listens: its parent is gone, so nothing more is written. */
export function detachOutput(): void {
  const ignore = () => {};
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
}

export function forkServer(args: readonly string[], streams: CliStreams): Promise<number> {
  const main = fileURLToPath(new URL('./main.js', import.meta.url));
  const child = spawn(process.execPath, [main, 'serve', ...args], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [DAEMON_ENV]: '1' },
  });
  return new Promise((resolve) => {
    let out = '';
    let ready = false;
    child.stderr.on('data', (chunk: Buffer) => streams.err(chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (ready || !/listening on \S+\n/.test(out)) return;
      ready = true;
      streams.out(out);
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
      resolve(0);
    });
    child.on('error', (err) => {
      streams.err(`vdisk: ${err.message}\n`);
      resolve(1);
    });
    child.on('exit', (code) => {
      if (!ready) resolve(code ?? 1);
    });
  });
}

/** Writes this process's id, as qemu-nbd's --pid-file does ("1234\n"). */
export async function writePidFile(file: string): Promise<void> {
  try {
    await writeFile(file, `${process.pid}\n`);
  } catch (err) {
    throw fromSystemError(err, `Failed to write pid file '${file}'`);
  }
}

export async function removePidFile(file: string): Promise<void> {
  await rm(file, { force: true });
}
