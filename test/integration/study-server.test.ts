/**
 * vdisk study --nbd: the guest-like workloads against a running NBD server (nbdkit's memory
 * plugin), with the server's own settings. It refuses to write without --nbd-scratch, refuses
 * read-only and too small exports before writing a byte, and writes nothing past the first SIZE
 * bytes of the export. No assertion is about speed.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startNbdkit } from '../helpers/nbd-serve.js';
import { lines, needTools, vdisk } from '../helpers/run.js';
import { studyInto } from '../helpers/study.js';
import { withTempDir } from '../helpers/tmp.js';

const WORKLOADS = [
  'install',
  'seq-write',
  'seq-read',
  'seq-read-warm',
  'rand-read',
  'rand-read-warm',
  'db-write',
  'db-rewrite',
];

describe('vdisk study --nbd', () => {
  it('measures an export with its server’s settings, only its first SIZE bytes', async (t) => {
    if (!needTools(t, 'nbdkit')) return;
    await withTempDir(async (dir) => {
      const server = await startNbdkit(['memory', '8M'], path.join(dir, 'nbd.sock'));
      try {
        // Data past the measured 4 MiB, which the study must leave alone.
        const keep = await vdisk(['io', '-f', 'raw', '-c', 'write -P 0xab 6M 64k', server.uri]);
        assert.equal(keep.code, 0, keep.stderr);
        const { r, html, report } = await studyInto(dir, [
          '--smoke',
          '--size',
          '4M',
          '--nbd',
          server.uri,
          '--nbd-scratch',
        ]);
        assert.equal(report.engine, 'nbd');
        assert.equal(report.filesystem, null);
        assert.equal(report.size, 4 * 1024 * 1024);
        assert.equal(report.evictedReads, false, "an export's server cache is its own");
        assert.deepEqual(report.server, {
          uri: server.uri.replace('nbd+unix:///', 'nbd+unix://'),
          exportBytes: 8 * 1024 * 1024,
          fua: true,
          trim: true,
          writeZeroes: true,
        });
        assert.equal(report.results.length, 1);
        const [cell] = report.results;
        assert.equal(cell.status, 'ok', cell.reason);
        assert.equal(cell.create, null, 'nothing was created');
        assert.deepEqual(
          cell.workloads.map((w: { name: string }) => w.name),
          WORKLOADS,
        );
        for (const w of cell.workloads) {
          assert.ok(w.ops > 0 && w.bytes > 0, w.name);
          const repeats = w.name.endsWith('-warm') ? 1 : 2;
          assert.equal(w.samples.length, repeats, `${w.name}: the smoke profile's two repetitions (one when warm)`);
        }
        assert.equal(report.recommendation.pick, null);
        assert.match(
          report.recommendation.text[0],
          /^One NBD export \(nbd\+unix:.*\) measured with its server's own settings: there is nothing to rank/,
        );
        // The terminal: one row named by the export, no ranking columns.
        assert.match(r.stdout, /^vdisk study \(smoke\) of nbd\+unix:.*: 8 workloads, its first 4 MiB\n/);
        assert.match(r.stdout, /^export\s+install\s+seq-write\s+seq-read\s+seq-read-warm/m);
        // No page cache of its to drop: the reads are not called cold, and the legend says why.
        assert.match(r.stdout, /^reads\s+the server's cache as it is: the study cannot drop it$/m);
        assert.doesNotMatch(r.stdout, /MiB\/s cold/);
        assert.match(r.stdout, /Measured on the NBD export nbd\+unix:.*, with its server's settings in \d+ s\./);
        const page = await readFile(html, 'utf8');
        assert.match(page, /<title>vdisk study of an NBD export, /);
        assert.equal(
          page.match(/<tr data-workload=/g)?.length,
          WORKLOADS.length,
          'one row per workload in the figures table',
        );
        // The data past the measured bytes is still there.
        const check = await vdisk(['io', '-f', 'raw', '-c', 'read -P 0xab 6M 64k', server.uri]);
        assert.equal(check.code, 0, check.stdout + check.stderr);
      } finally {
        await server.stop();
      }
    });
  });

  it('refuses read-only and too small exports in one line', async (t) => {
    if (!needTools(t, 'nbdkit')) return;
    await withTempDir(async (dir) => {
      const readOnly = await startNbdkit(['-r', 'memory', '8M'], path.join(dir, 'ro.sock'));
      const small = await startNbdkit(['memory', '2M'], path.join(dir, 'small.sock'));
      try {
        const cases: Array<[string, RegExp]> = [
          [
            readOnly.uri,
            /^vdisk: The export 'nbd\+unix:.*ro\.sock' is read-only: the study writes, so it needs a writable export$/,
          ],
          [
            small.uri,
            /^vdisk: The export 'nbd\+unix:.*small\.sock' is 2 MiB; the smoke study measures its first 4 MiB: give --size 2M or less, or a larger export$/,
          ],
        ];
        for (const [uri, message] of cases) {
          const r = await vdisk(['study', '--smoke', '--size', '4M', '--nbd', uri, '--nbd-scratch'], { cwd: dir });
          assert.equal(r.code, 1, r.stdout);
          assert.equal(lines(r.stderr).length, 1, r.stderr);
          assert.match(r.stderr.trim(), message);
        }
      } finally {
        await readOnly.stop();
        await small.stop();
      }
    });
  });
});
