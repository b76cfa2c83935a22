/** Synchronous runs of the QEMU tools, for tests that use them as oracles between steps. */
import { execFileSync, spawnSync } from 'node:child_process';

export { hasCommand as hasTool } from './run.js';

export interface SyncRunResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[]): SyncRunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Runs a command that must succeed, returning its stdout. */
export function runOk(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}
