/**
 * The study's HTML report in a real browser: Debian's headless Chromium, driven by
 * playwright-core. The charts render (SVG bars carrying data), the log-scale switch and table
 * sorting work, the page asks for nothing over the network, and the console stays clean.
 * Skipped, loudly, when Chromium is not installed.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { needTools, vdisk } from '../helpers/run.js';
import { studyInto } from '../helpers/study.js';
import { withTempDir } from '../helpers/tmp.js';

const CHROMIUM = '/usr/bin/chromium';
/** With headless: true playwright adds --headless, and --user-data-dir= the fresh profile directory. */
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** The little of the DOM the page callbacks use (the project's TypeScript has no DOM types). */
interface El {
  getAttribute(name: string): string | null;
  querySelector(selector: string): El | null;
  querySelectorAll(selector: string): ArrayLike<El>;
  getBoundingClientRect(): { width: number; height: number };
  getBBox(): { height: number };
  textContent: string | null;
  parentElement: El | null;
  scrollWidth: number;
  clientWidth: number;
}
declare const getComputedStyle: (el: El) => { display: string; fill: string; fillOpacity: string };

interface Result {
  id: string;
  workloads: Array<{ name: string; mibPerSecond: number; iops: number }>;
}

const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing (apt-get install -y chromium)`;
if (missing) process.stderr.write(`\n*** SKIPPING the study HTML test: ${missing} ***\n\n`);

/** Opens a report in headless Chromium, collecting console problems and requests. */
async function withPage(
  html: string,
  fn: (page: import('playwright-core').Page) => Promise<void>,
): Promise<{ problems: string[]; requests: string[] }> {
  const { chromium } = await import('playwright-core');
  const profile = await mkdtemp(path.join(os.tmpdir(), 'vdisk-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
  });
  const problems: string[] = [];
  const requests: string[] = [];
  const url = pathToFileURL(html).href;
  try {
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (req) => requests.push(req.url()));
    await page.setViewportSize({ width: 1400, height: 1000 });
    await page.goto(url, { waitUntil: 'load' });
    await fn(page);
  } finally {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  }
  return { problems, requests: requests.filter((u) => u !== url && !u.startsWith('data:')) };
}

describe('vdisk study HTML report', { skip: missing }, () => {
  it('renders its charts in headless Chromium, offline, without console errors', { timeout: 120_000 }, async () => {
    await withTempDir(async (dir) => {
      const images = path.join(dir, 'images');
      await mkdir(images);
      const html = path.join(dir, 'study.html');
      const json = path.join(dir, 'study.json');
      const r = await vdisk([
        'study',
        '--smoke',
        '--dir',
        images,
        '--cache',
        'none,writeback,unsafe',
        '--json',
        json,
        '--html',
        html,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(await readFile(json, 'utf8'));

      const seen = await withPage(html, async (page) => {
        // One figure per workload, each with a drawn linear chart whose bars carry their values.
        const figures = await page.$$eval('figure[data-workload]', (nodes) =>
          (nodes as unknown as El[]).map((el) => {
            const svg = el.querySelector('svg.chart-linear');
            const bars = Array.from(el.querySelectorAll('svg.chart-linear rect.bar'));
            const box = svg?.getBoundingClientRect();
            return {
              workload: el.getAttribute('data-workload'),
              visible: Boolean(box && box.width > 100 && box.height > 50),
              bars: bars.length,
              positive: bars.filter(
                (b) => Number(b.getAttribute('data-value')) > 0 && Number(b.getAttribute('height')) >= 0,
              ).length,
              drawn: bars.filter((b) => b.getBBox().height > 0).length,
              groups: Array.from(el.querySelectorAll('svg.chart-linear g.group')).map((g) =>
                g.getAttribute('data-group'),
              ),
            };
          }),
        );
        assert.deepEqual(
          figures.map((f) => f.workload),
          report.workloads,
        );
        const ok = report.results.filter((x: { status: string }) => x.status === 'ok').length;
        assert.ok(ok > 0, 'some combinations ran');
        for (const f of figures) {
          assert.ok(f.visible, `${f.workload}: the chart is laid out`);
          assert.equal(f.bars, ok, `${f.workload}: one bar per combination that ran`);
          assert.equal(f.positive, ok, `${f.workload}: every bar has a value`);
          assert.ok(f.drawn > 0, `${f.workload}: bars are drawn with height`);
          assert.deepEqual(f.groups, ['none', 'writeback', 'unsafe'], `${f.workload}: grouped by cache mode`);
        }
        // Creation time and space on disk beside them.
        for (const side of ['create', 'disk']) {
          const bars = await page.$$eval(`figure[data-side="${side}"] rect.bar`, (els) => els.length);
          assert.ok(bars >= 7, `${side}: a bar per format and preallocation`);
        }
        // Bars are painted: raw in a colour, qcow2 with a hatch pattern that resolves.
        const fills = await page.$$eval('figure[data-workload="seq-write"] svg.chart-linear rect.bar', (nodes) =>
          (nodes as unknown as El[]).map((e) => `${e.getAttribute('data-format')} ${getComputedStyle(e).fill}`),
        );
        assert.ok(fills.some((f) => /^raw rgb\(/.test(f)));
        assert.ok(fills.some((f) => /^qcow2 url\(.*#hatch-/.test(f)));

        // The log-scale switch shows the other set of charts.
        const shown = () =>
          page.$$eval('figure[data-workload] svg.chart', (nodes) =>
            (nodes as unknown as El[])
              .filter((e) => getComputedStyle(e).display !== 'none')
              .map((e) => e.getAttribute('data-scale')),
          );
        assert.deepEqual([...new Set(await shown())], ['linear']);
        await page.click('#log-scale');
        assert.deepEqual([...new Set(await shown())], ['log']);

        // The ranking fits a 1400 px page: no sideways scrolling; cold and warm reads say which they are.
        const fit = await page.$eval('#ranking', (t) => {
          const wrap = (t as unknown as El).parentElement!;
          return { scroll: wrap.scrollWidth, client: wrap.clientWidth };
        });
        assert.ok(fit.scroll <= fit.client, `the ranking is ${fit.scroll} px wide in ${fit.client} px`);
        const heads = await page.$$eval('#ranking th', (ths) => (ths as unknown as El[]).map((th) => th.textContent));
        assert.ok(heads.includes('seq-readMiB/s cold') && heads.includes('seq-read-warmMiB/s warm'), heads.join('|'));
        const titles = await page.$$eval('figure[data-workload] h3', (hs) =>
          (hs as unknown as El[]).map((h) => h.textContent),
        );
        assert.ok(
          titles.some((x) => /^Random read 4 KiB, cold/.test(x ?? '')),
          titles.join('|'),
        );
        assert.ok(
          titles.some((x) => /^Random read 4 KiB, warm/.test(x ?? '')),
          titles.join('|'),
        );

        // Sorting the ranking by score: best first, then worst first.
        const firstRow = () => page.$eval('#ranking tbody tr', (tr) => (tr as unknown as El).getAttribute('data-id'));
        const ran = report.ranking.filter((x: { rank: number | null }) => x.rank !== null);
        await page.click('#ranking th:nth-child(6)');
        assert.equal(await firstRow(), ran[0].id, 'sorted by score, descending');
        await page.click('#ranking th:nth-child(6)');
        assert.equal(await firstRow(), ran.at(-1).id, 'sorted by score, ascending');

        // The embedded data is the JSON report.
        const embedded = await page.$eval('#study-data', (el) => JSON.parse((el as unknown as El).textContent ?? '{}'));
        assert.deepEqual(embedded.results, report.results);
      });
      assert.deepEqual(seen.problems, [], 'no console errors or warnings');
      assert.deepEqual(seen.requests, [], 'the page fetches nothing');
    });
  });

  it('with both engines, draws them side by side, with the agreement and a ranking each', {
    timeout: 180_000,
  }, async (t) => {
    if (!needTools(t, 'qemu-nbd')) return;
    await withTempDir(async (dir) => {
      const images = path.join(dir, 'images');
      await mkdir(images);
      const workloads = ['seq-write', 'rand-read', 'db-write'];
      const selection = ['--cache', 'writeback,unsafe', '--workloads', workloads.join(',')];
      const { html, report: doc } = await studyInto(dir, [
        '--smoke',
        '--engine',
        'both',
        '--dir',
        images,
        ...selection,
      ]);
      const [mine, qemu] = doc.engines;
      const figureOf = (engine: { results: Result[] }, id: string, name: string) => {
        const w = engine.results.find((x) => x.id === id)!.workloads.find((x) => x.name === name)!;
        return name === 'seq-write' ? w.mibPerSecond : w.iops;
      };
      const seen = await withPage(html, async (page) => {
        // One wide figure per workload: a pair of bars per combination, vdisk's then QEMU's, with the JSON's figures.
        const figures = await page.$$eval('figure[data-compare]', (nodes) =>
          (nodes as unknown as El[]).map((el) => ({
            workload: el.getAttribute('data-compare'),
            width: el.getBoundingClientRect().width,
            bars: Array.from(el.querySelectorAll('svg.chart-linear rect.bar')).map((b) => ({
              engine: b.getAttribute('data-engine'),
              id: b.getAttribute('data-id'),
              value: Number(b.getAttribute('data-value')),
              opacity: getComputedStyle(b).fillOpacity,
              drawn: b.getBBox().height > 0,
            })),
          })),
        );
        assert.deepEqual(
          figures.map((f) => f.workload),
          workloads,
        );
        for (const f of figures) {
          assert.ok(f.width > 600, `${f.workload}: drawn wide`);
          assert.equal(f.bars.length, 2 * mine.results.length, `${f.workload}: two bars per combination`);
          for (let i = 0; i < f.bars.length; i += 2) {
            const [a, b] = [f.bars[i]!, f.bars[i + 1]!];
            assert.deepEqual([a.engine, b.engine, a.id], ['vdisk', 'qemu', b.id], `${f.workload}: pairs`);
            assert.equal(a.value, figureOf(mine, a.id!, f.workload!));
            assert.equal(b.value, figureOf(qemu, b.id!, f.workload!));
            assert.equal(a.opacity, '1');
            assert.equal(b.opacity, '0.45', 'QEMU bars are pale');
          }
          assert.ok(f.bars.some((b) => b.drawn));
        }
        // The agreement table: the JSON's ρ per workload and for the score.
        const rows = await page.$$eval('#agreement tbody tr', (trs) =>
          (trs as unknown as El[]).map((tr) => [
            tr.getAttribute('data-what'),
            tr.querySelector('td:nth-child(2)')?.textContent,
          ]),
        );
        assert.deepEqual(
          rows,
          doc.agreement.map((a: { what: string; rho: number | null; strictRho: number | null }) => [
            a.what,
            a.rho === null ? (a.strictRho === null ? '-' : 'all tied') : a.rho.toFixed(2),
          ]),
        );
        // A recommendation and a ranking per engine.
        const recommendations = await page.$$eval('section.recommendation[data-engine]', (els) =>
          (els as unknown as El[]).map((e) => e.getAttribute('data-engine')),
        );
        assert.deepEqual(recommendations, ['vdisk', 'qemu']);
        for (const e of doc.engines) {
          const ids = await page.$$eval(`#ranking-${e.engine} tbody tr`, (trs) =>
            (trs as unknown as El[]).map((tr) => tr.getAttribute('data-id')),
          );
          assert.deepEqual(
            ids,
            e.ranking.map((x: { id: string }) => x.id),
            `${e.engine}: ranked as in the JSON`,
          );
        }
        // The log-scale switch covers the paired charts too.
        await page.click('#log-scale');
        const shown = await page.$$eval('figure[data-compare] svg.chart', (nodes) =>
          (nodes as unknown as El[])
            .filter((e) => getComputedStyle(e).display !== 'none')
            .map((e) => e.getAttribute('data-scale')),
        );
        assert.deepEqual([...new Set(shown)], ['log']);
        const embedded = await page.$eval('#study-data', (el) => JSON.parse((el as unknown as El).textContent ?? '{}'));
        assert.deepEqual(embedded, doc);
        const width = await page.$eval('html', (el) => (el as unknown as { scrollWidth: number }).scrollWidth);
        assert.ok(width <= 1400, `the page fits 1400 px (${width})`);
      });
      assert.deepEqual(seen.problems, [], 'no console errors or warnings');
      assert.deepEqual(seen.requests, [], 'the page fetches nothing');
    });
  });
});
