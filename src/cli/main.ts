#!/usr/bin/env node
/** The `vdisk` executable: everything is in run.ts, so that tests and the JS API can call it. */
import { runCli } from './run.js';

process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  // `vdisk map … | head`: the reader went away; that is not vdisk's failure.
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await runCli(process.argv.slice(2));
