/**
 * `npm run test:reliability [-- --long] [--minutes N] [--only crash|faults|hostile|fuzz|kill|clients|servers|locks|create]`
 *
 * Runs the reliability families (power loss, failing disks, hostile images, mutation fuzzing,
 * killed servers, hostile NBD clients, hostile NBD servers) with node's test runner. `--long` (or
 * VDISK_RELIABILITY=long) runs every crash state in all cache modes, every fault position and
 * combination, thousands of fuzz cases per image and thousands of kills;
 * `--minutes N` repeats the whole run with new seeds until N minutes have passed (hours-long
 * soak runs). The bounded version of the same tests is part of `npm test`.
 *
 * Node's test runner also loads this file as a test when it runs dist/test/: it does nothing
 * then.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FAMILIES: Record<string, string[]> = {
  crash: ['crash.test.js', 'crash-regressions.test.js', 'snapshot-crash.test.js', 'chain-crash.test.js'],
  faults: ['faults.test.js'],
  hostile: [
    'hostile.test.js',
    'denied-tables.test.js',
    'backing-policy.test.js',
    'empty-space.test.js',
    'block-status.test.js',
    'hostile-snapshots.test.js',
  ],
  fuzz: ['fuzz.test.js'],
  kill: ['kill.test.js'],
  clients: ['nbd-clients.test.js', 'shutdown.test.js'],
  servers: ['nbd-servers.test.js'],
  locks: ['force-share.test.js'],
  create: ['interrupted-create.test.js'],
};

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function runOnce(files: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ['--test', '--test-reporter=spec', `--test-concurrency=${env.VDISK_RELIABILITY_CONCURRENCY ?? 2}`, ...files],
      { stdio: 'inherit', env },
    );
    child.on('close', (code) => resolve(code ?? 1));
  });
}

async function main(): Promise<void> {
  const long = process.argv.includes('--long') || process.env.VDISK_RELIABILITY === 'long';
  const minutes = Number(option('--minutes') ?? process.env.VDISK_RELIABILITY_MINUTES ?? 0);
  const only = option('--only');
  const dir = path.dirname(fileURLToPath(import.meta.url));
  const names = only ? only.split(',').flatMap((f) => FAMILIES[f] ?? []) : Object.values(FAMILIES).flat();
  if (names.length === 0) {
    console.error(`Unknown family '${only}' (use ${Object.keys(FAMILIES).join(', ')})`);
    process.exit(2);
  }
  const files = names.map((f) => path.join(dir, f));
  const started = Date.now();
  let seed = Number(process.env.VDISK_RELIABILITY_SEED ?? 20240601);
  let round = 0;
  let failed = 0;
  do {
    round++;
    const env = { ...process.env, VDISK_RELIABILITY: long ? 'long' : 'ci', VDISK_RELIABILITY_SEED: String(seed) };
    console.log(`[reliability] round ${round}: ${long ? 'long' : 'bounded'} run, seed ${seed}, ${names.join(' ')}`);
    const code = await runOnce(files, env);
    if (code !== 0) failed++;
    console.log(
      `[reliability] round ${round} ${code === 0 ? 'passed' : 'FAILED'} after ${((Date.now() - started) / 60000).toFixed(1)} min`,
    );
    seed += 7919;
  } while (minutes > 0 && Date.now() - started < minutes * 60000);
  console.log(`[reliability] ${round} round(s), ${failed} failed, ${((Date.now() - started) / 60000).toFixed(1)} min`);
  process.exit(failed > 0 ? 1 : 0);
}

if (!process.env.NODE_TEST_CONTEXT) await main();
