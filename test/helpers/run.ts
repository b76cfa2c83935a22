/**
 * Running commands in tests: vdisk's own CLI (bin/vdisk.cjs, which loads the built
 * dist/src/cli/main.js, through the same Node that runs the tests) and the QEMU tools used as
 * oracles.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Written to the command's standard input, which is then closed. */
  input?: string;
  /** Run under another user (root only), as `setpriv` allows: for permission tests. */
  asUser?: { uid: number; gid: number };
}

/** dist/test/helpers/run.js -> bin/vdisk.cjs, the executable npm installs (it loads dist/src/cli/main.js). */
export const VDISK_MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/vdisk.cjs');

export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  let cmd = command;
  let argv = [...args];
  if (options.asUser) {
    argv = [`--reuid=${options.asUser.uid}`, `--regid=${options.asUser.gid}`, '--clear-groups', cmd, ...argv];
    cmd = 'setpriv';
  }
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({
        code: code ?? (signal ? 128 : -1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    // A command that exits without reading its input must not fail the test with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

/** Runs `vdisk <args>`. */
export function vdisk(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return run(process.execPath, [VDISK_MAIN, ...args], options);
}

/** Skips the test, saying which, when a tool it needs is not on PATH; true when all are there. */
/** Runs `command` and returns its stdout; a non-zero exit fails the test with its output. */
export async function runOk(command: string, args: readonly string[]): Promise<string> {
  const r = await run(command, args);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Runs vdisk and returns its stdout; a non-zero exit fails the test with its output. */
export function vdiskOk(args: readonly string[]): Promise<string> {
  return runOk(process.execPath, [VDISK_MAIN, ...args]).catch((err: Error) => {
    throw new Error(err.message.replace(`${process.execPath} ${VDISK_MAIN}`, 'vdisk'));
  });
}

export function needTools(t: { skip(message: string): void }, ...tools: string[]): boolean {
  const missing = tools.filter((tool) => !hasCommand(tool));
  if (missing.length > 0) {
    t.skip(`not installed: ${missing.join(', ')}`);
    return false;
  }
  return true;
}

/** True when an executable of that name is on PATH. */
export function hasCommand(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

/**
 * qemu-io's and vdisk io's report lines with the timing taken out, so two runs compare equal:
 * "4 KiB, 1 ops; 00.00 sec (3.966 MiB/sec and 1015.1882 ops/sec)" -> "4 KiB, 1 ops; TIME".
 */
export function withoutTiming(text: string): string {
  return text
    .replace(/; [0-9:.]+( sec)? \([0-9.]+ (bytes|KiB|MiB|GiB|TiB)\/sec and [0-9.]+ ops\/sec\)/g, '; TIME')
    .replace(/^(\d+),(\d+),[0-9:.]+,[0-9.]+,[0-9.]+$/gm, '$1,$2,TIME');
}

/** The lines of a command's stderr (without the empty one after the last newline). */
export function lines(text: string): string[] {
  return text.split('\n').filter((line, i, all) => !(line === '' && i === all.length - 1));
}
