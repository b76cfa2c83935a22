/**
 * vdisk study on tiny images with the test-only --smoke profile: the JSON has every requested
 * combination, each measured or explained; the table, the recommendation and the file paths are
 * printed; the images are gone afterwards. No assertion is about which mode is faster.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { openImage } from '../../src/engine/open.js';
import { FULL_SELECTION, PROFILES, studyMatrix } from '../../src/tools/study/matrix.js';
import { recommend } from '../../src/tools/study/recommend.js';
import { studyHtml } from '../../src/tools/study/report-html.js';
import { studyReport } from '../../src/tools/study/report-json.js';
import { runStudy } from '../../src/tools/study/runner.js';
import { formatTable } from '../../src/tools/study/table.js';
import { WORKLOAD_NAMES } from '../../src/tools/study/workloads.js';
import { lines, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

function assertPercentiles(p: Record<string, number>, what: string): void {
  for (const key of ['p50', 'p95', 'p99', 'max', 'mean']) {
    assert.equal(typeof p[key], 'number', `${what}.${key}`);
    assert.ok(Number.isFinite(p[key]) && p[key]! >= 0, `${what}.${key} = ${p[key]}`);
  }
  assert.ok(p.p50! <= p.p95! && p.p95! <= p.p99! && p.p99! <= p.max!, `${what}: percentiles in order`);
}

describe('vdisk study', () => {
  it('runs the whole matrix and writes JSON with every combination measured or explained', async () => {
    await withTempDir(async (dir) => {
      const images = path.join(dir, 'images');
      await mkdir(images);
      const json = path.join(dir, 'study.json');
      const html = path.join(dir, 'study.html');
      const r = await vdisk(['study', '--smoke', '--size', '4M', '--dir', images, '--json', json, '--html', html]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await readdir(images), [], 'the temporary directory and images are removed');

      const report = JSON.parse(await readFile(json, 'utf8'));
      assert.equal(report.tool, 'vdisk study');
      assert.equal(report.schema, 3);
      assert.equal(report.evictedReads, true);
      // Cold and warm reads, labelled as such; warm ones are reported but not scored.
      assert.deepEqual(
        report.workloadDefinitions
          .filter((w: { pageCache: string | null }) => w.pageCache !== null)
          .map((w: { name: string; pageCache: string; scored: boolean }) => [w.name, w.pageCache, w.scored]),
        [
          ['seq-read', 'cold', true],
          ['seq-read-warm', 'warm', false],
          ['rand-read', 'cold', true],
          ['rand-read-warm', 'warm', false],
        ],
      );
      assert.equal(report.engine, 'vdisk');
      assert.equal(report.server, null);
      assert.match(report.command, /^vdisk study --smoke/);
      assert.equal(report.size, 4 * 1024 * 1024);
      assert.equal(report.profile.name, 'smoke');
      for (const key of ['os', 'kernel', 'arch', 'cpuModel', 'node', 'vdisk']) {
        assert.equal(typeof report.machine[key], 'string', `machine.${key}`);
      }
      assert.ok(report.machine.cpus >= 1);
      assert.equal(report.machine.node, process.version);
      assert.equal(typeof report.filesystem.type, 'string');
      assert.notEqual(report.filesystem.type, '');
      assert.ok(report.filesystem.dir.startsWith(images));
      assert.deepEqual(report.workloads, [...WORKLOAD_NAMES]);
      assert.deepEqual(
        report.workloadDefinitions.map((w: { name: string }) => w.name),
        [...WORKLOAD_NAMES],
      );

      const expected = studyMatrix(FULL_SELECTION).map((c) => c.id);
      assert.equal(expected.length, 35);
      assert.deepEqual(report.results.map((x: { id: string }) => x.id).sort(), [...expected].sort());
      for (const res of report.results) {
        assert.ok(['ok', 'unsupported', 'failed'].includes(res.status), res.id);
        assert.ok(['volatile', 'flush-safe', 'durable'].includes(res.safety), res.id);
        if (res.status !== 'ok') {
          assert.equal(typeof res.reason, 'string', `${res.id} says why it did not run`);
          assert.ok(res.reason.length > 0);
          continue;
        }
        assert.equal(res.reason, null);
        assert.ok(res.create.seconds > 0, `${res.id} creation time`);
        assert.deepEqual(res.create.samples.length, 1);
        assert.ok(res.create.fileBytes >= 4 * 1024 * 1024 || res.format === 'qcow2', `${res.id} file size`);
        assert.equal(typeof res.create.allocatedBytes, 'number');
        assert.equal(typeof res.afterRun.allocatedBytes, 'number');
        assert.deepEqual(
          res.workloads.map((w: { name: string }) => w.name),
          [...WORKLOAD_NAMES],
          `${res.id} ran every workload`,
        );
        for (const w of res.workloads) {
          const what = `${res.id} ${w.name}`;
          for (const key of ['ops', 'bytes', 'seconds', 'mibPerSecond', 'iops', 'flushes', 'queueDepth']) {
            assert.ok(Number.isFinite(w[key]) && w[key] >= 0, `${what}.${key} = ${w[key]}`);
          }
          assert.ok(w.ops > 0, `${what} did some I/O`);
          assert.ok(w.seconds > 0);
          assertPercentiles(w.latencyMs, `${what} latency`);
          assertPercentiles(w.flushLatencyMs, `${what} flush latency`);
          assert.equal(typeof w.cutShort, 'boolean');
          const repeats = w.name.endsWith('-warm') ? 1 : PROFILES.smoke.repeats;
          assert.equal(w.samples.length, repeats, `${what}: one sample per repetition (one for warm reads)`);
          const figures = w.samples.map((m: { iops: number; mibPerSecond: number }) =>
            ['rand-read', 'rand-read-warm', 'db-write', 'db-rewrite'].includes(w.name) ? m.iops : m.mibPerSecond,
          );
          const median = ['rand-read', 'rand-read-warm', 'db-write', 'db-rewrite'].includes(w.name)
            ? w.iops
            : w.mibPerSecond;
          assert.ok(
            median >= Math.min(...figures) && median <= Math.max(...figures),
            `${what}: the median of its samples`,
          );
          if (['install', 'seq-write', 'db-write', 'db-rewrite'].includes(w.name)) {
            assert.ok(w.flushes >= 1, `${what} ends with a flush`);
          }
        }
      }
      assert.equal(report.ranking.length, 35);
      const ranked = report.ranking.filter((x: { rank: number | null }) => x.rank !== null);
      assert.deepEqual(
        ranked.map((x: { rank: number }) => x.rank),
        ranked.map((_: unknown, i: number) => i + 1),
      );
      // The range of places holds the strict place, and the score lies within its spread.
      for (const x of ranked) {
        const [best, worst] = x.rankRange;
        assert.ok(best <= x.rank && x.rank <= worst && worst <= ranked.length, x.id);
        assert.ok(x.scoreLow <= x.score && x.score <= x.scoreHigh, x.id);
      }
      assert.ok(report.recommendation.text.length >= 1);

      // The terminal: the table (every combination), the recommendation, the two paths.
      assert.match(r.stdout, /^vdisk study \(smoke\): 35 combinations × 8 workloads × 2 repetitions, 4 MiB images in /);
      for (const id of expected) {
        const [format, prealloc, cache] = id.split('/');
        assert.match(r.stdout, new RegExp(`\\b${format}\\s+${prealloc}\\s+${cache}\\b`), `${id} in the table`);
      }
      for (const paragraph of report.recommendation.text) assert.ok(r.stdout.includes(paragraph));
      assert.ok(r.stdout.includes(`JSON: ${json}\n`));
      assert.ok(r.stdout.includes(`HTML: ${html}\n`));
      // Not a terminal: the progress goes to stderr as a few lines, ending at 100%.
      assert.match(r.stderr, /100% 315\/315/);
      const page = await readFile(html, 'utf8');
      assert.match(page, /^<!doctype html>/);
      assert.doesNotMatch(page, /(src|href)="https?:/, 'nothing is fetched from the network');
    });
  });

  it('reports combinations the filesystem cannot do as unsupported, with the reason', async () => {
    // A filesystem without O_DIRECT, as the open policy reports it (tmpfs before Linux 6.6).
    const noDirect: typeof openImage = async (filename, options = {}) => {
      if (options.cache === 'none' || options.cache === 'directsync') {
        throw new VdiskError(
          'ENOTSUP',
          `Could not open '${filename}': the filesystem does not support O_DIRECT (cache=${options.cache}); use a cache mode without O_DIRECT, such as writeback`,
        );
      }
      return openImage(filename, options);
    };
    await withTempDir(async (dir) => {
      const run = await runStudy({
        profile: PROFILES.smoke,
        size: 2 * 1024 * 1024,
        selection: {
          formats: ['raw', 'qcow2'],
          preallocs: ['off', 'metadata'],
          caches: ['none', 'writeback', 'directsync'],
        },
        workloads: ['seq-read', 'db-write'],
        dir,
        openImage: noDirect,
      });
      assert.deepEqual(
        run.results.map((r) => `${r.id} ${r.status}`),
        [
          'raw/off/none unsupported',
          'raw/off/writeback ok',
          'raw/off/directsync unsupported',
          'qcow2/off/none unsupported',
          'qcow2/off/writeback ok',
          'qcow2/off/directsync unsupported',
          'qcow2/metadata/none unsupported',
          'qcow2/metadata/writeback ok',
          'qcow2/metadata/directsync unsupported',
        ],
      );
      const none = run.results.find((r) => r.id === 'raw/off/none')!;
      assert.equal(
        none.reason,
        "Could not open 'raw-off-none.img': the filesystem does not support O_DIRECT (cache=none); use a cache mode without O_DIRECT, such as writeback",
      );
      assert.ok(none.create !== null, 'the creation was still timed');
      assert.deepEqual(none.workloads, []);
      // seq-read without seq-write: the data it reads was written first, untimed.
      const ok = run.results.find((r) => r.id === 'raw/off/writeback')!;
      assert.deepEqual(
        ok.workloads.map((w) => w.name),
        ['seq-read', 'db-write'],
      );
      assert.ok(ok.workloads[0]!.bytes > 0);

      const table = formatTable(run);
      assert.match(
        table,
        /-\s+raw\s+off\s+none\s+flush-safe\s+unsupported: Could not open 'raw-off-none\.img': the filesystem does not support O_DIRECT \(cache=none\)/,
      );
      const advice = recommend(run);
      assert.equal(advice.pick?.cache, 'writeback');
      assert.equal(advice.durable, null, 'no durable mode ran');
      const page = studyHtml(studyReport(run, 'test'));
      assert.equal(
        page.match(/<g class="missing"/g)?.length,
        2 * 6 * 2,
        'two workloads × six missing bars × linear and log',
      );
      assert.match(page, /unsupported: Could not open &#39;raw-off-none\.img&#39;/);
      assert.deepEqual(await readdir(dir), [], 'the temporary directory is removed');
    });
  });

  it('refuses bad arguments with one line and changes nothing', async () => {
    await withTempDir(async (dir) => {
      const cases: Array<[string[], RegExp]> = [
        [['--formats', 'vmdk'], /^vdisk: Unknown format 'vmdk' \(use raw, qcow2 or all\)$/],
        [['--cache', 'none,fast'], /^vdisk: Unknown cache mode 'fast'/],
        [['--workloads', 'boot'], /^vdisk: Unknown workload 'boot'/],
        [
          ['--formats', 'raw', '--prealloc', 'metadata'],
          /^vdisk: No combination to study: preallocation metadata does not exist for format raw$/,
        ],
        [['--quick', '--full'], /^vdisk: Choose one of --quick, --full and --smoke/],
        [['--size', '64k'], /^vdisk: The study needs images of at least 1 MiB$/],
        [['extra'], /^vdisk: Unexpected argument: extra/],
        [['--nbd-scratch'], /^vdisk: --nbd-scratch goes with --nbd/],
        [['--nbd', 'disk.img', '--nbd-scratch'], /^vdisk: Not an NBD URI: 'disk\.img'/],
        [
          ['--nbd', 'nbd+unix:///?socket=/nonexistent.sock'],
          /^vdisk: The study writes over the first 256 MiB of 'nbd\+unix:\/\/\/\?socket=\/nonexistent\.sock', destroying what is there; if the export holds nothing to keep, confirm with --nbd-scratch$/,
        ],
        [
          ['--nbd', 'nbd://localhost/x', '--nbd-scratch', '--cache', 'none'],
          /^vdisk: --cache does not apply to --nbd, which measures one export as its server is set up/,
        ],
        [['--compare'], /^vdisk: --compare takes one or two study JSON files/],
        [['--compare', 'a.json', 'b.json', '--quick'], /^vdisk: --compare measures nothing: --quick does not apply/],
        [['--compare', 'missing.json'], /^vdisk: Could not read 'missing\.json'/],
      ];
      for (const [args, message] of cases) {
        // --nbd and --compare make no images, so they take no --dir.
        const where = args.includes('--nbd') || args.includes('--compare') ? [] : ['--dir', dir];
        const r = await vdisk(['study', ...where, ...args], { cwd: dir });
        assert.equal(r.code, 1, args.join(' '));
        assert.equal(lines(r.stderr).length, 1, r.stderr);
        assert.match(r.stderr.trim(), message);
        assert.deepEqual(await readdir(dir), [], 'nothing was made');
      }
    });
  });

  it('runs a selection with the JSON and HTML beside each other by default', async () => {
    await withTempDir(async (dir) => {
      const r = await vdisk(['study', '--smoke', '--formats', 'raw', '--cache', 'unsafe', '--prealloc', 'off'], {
        cwd: dir,
      });
      assert.equal(r.code, 0, r.stderr);
      const files = (await readdir(dir)).sort();
      assert.equal(files.length, 2, files.join(' '));
      assert.match(files[0]!, /^vdisk-study-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.html$/);
      assert.equal(files[1], files[0]!.replace(/html$/, 'json'));
      const report = JSON.parse(await readFile(path.join(dir, files[1]!), 'utf8'));
      assert.deepEqual(
        report.results.map((x: { id: string }) => x.id),
        ['raw/off/unsafe'],
      );
      assert.ok(r.stdout.includes(`JSON: ${path.join(dir, files[1]!)}`));
    });
  });
});
