#!/usr/bin/env node
/** The `vdisk` executable: everything is in run.ts, so that tests and the JS API can call it. */
import { runCli } from './run.js';

process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  // `vdisk map … | head`: the reader went away; that is not vdisk's failure.
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

/**
 * Commands write their output as qemu-img does: a write waits for a slow reader, so millions of
 * lines (check's messages about a hostile image, map's extents) are never held in memory. The
 * server alone keeps asynchronous output: a log nobody reads must not stop it.
 */
function waitForSlowReaders(): void {
  for (const stream of [process.stdout, process.stderr]) {
    // Node has no public switch for this; the pipe's handle has one (a no-op for files and TTYs).
    (stream as unknown as { _handle?: { setBlocking?(on: boolean): number } })._handle?.setBlocking?.(true);
  }
}

if (process.argv[2] !== 'serve') waitForSlowReaders();
process.exitCode = await runCli(process.argv.slice(2));
