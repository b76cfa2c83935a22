/**
 * `npm run bench [-- --quick]`: every benchmark in turn (the QD1 matrix, the NBD workloads, the
 * engine against fio, peak memory), each printing its own table, then one summary of the
 * headline figures against the project's targets. Options are passed to each benchmark.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineLine, table } from './lib/run.js';
import type { SummaryLine } from './lib/summary.js';

const BENCHES = ['matrix', 'nbd', 'engine', 'rss'];

function main(): void {
  const args = process.argv.slice(2);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vdisk-bench-all-'));
  const lines: SummaryLine[] = [];
  const failed: string[] = [];
  try {
    for (const bench of BENCHES) {
      process.stdout.write(`\n=== bench:${bench} ===\n`);
      const summary = path.join(dir, `${bench}.json`);
      const r = spawnSync(process.execPath, [path.join(here, `${bench}.js`), ...args, '--summary', summary], {
        stdio: 'inherit',
      });
      if (r.status !== 0) {
        failed.push(bench);
        continue;
      }
      lines.push(...(JSON.parse(readFileSync(summary, 'utf8')) as SummaryLine[]));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = [['bench', 'measure', 'value', 'target', 'met']];
  for (const l of lines) {
    const target = l.atLeast !== undefined ? `≥ ${l.atLeast}` : l.atMost !== undefined ? `≤ ${l.atMost}` : '';
    const met =
      l.atLeast !== undefined ? l.value >= l.atLeast : l.atMost !== undefined ? l.value <= l.atMost : undefined;
    rows.push([l.bench, l.measure, l.value.toFixed(2), target, met === undefined ? '' : met ? 'yes' : 'no']);
  }
  process.stdout.write(`\n=== summary (${machineLine()}) ===\n${table(rows)}\n`);
  if (failed.length) {
    process.stderr.write(`bench: ${failed.join(', ')} did not finish\n`);
    process.exit(1);
  }
}

main();
