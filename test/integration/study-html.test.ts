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
import { vdisk } from '../helpers/run.js';
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
}
declare const getComputedStyle: (el: El) => { display: string; fill: string };

const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing (apt-get install -y chromium)`;
if (missing) process.stderr.write(`\n*** SKIPPING the study HTML test: ${missing} ***\n\n`);

describe('vdisk study HTML report', { skip: missing }, () => {
  it('renders its charts in headless Chromium, offline, without console errors', { timeout: 120_000 }, async () => {
    const { chromium } = await import('playwright-core');
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

      const profile = await mkdtemp(path.join(os.tmpdir(), 'vdisk-chromium-'));
      const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: FLAGS,
      });
      const problems: string[] = [];
      const requests: string[] = [];
      try {
        const page = await context.newPage();
        page.on('console', (m) => {
          if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
        });
        page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
        page.on('request', (req) => requests.push(req.url()));
        await page.setViewportSize({ width: 1400, height: 1000 });
        const url = pathToFileURL(html).href;
        await page.goto(url, { waitUntil: 'load' });

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

        assert.deepEqual(problems, [], 'no console errors or warnings');
        assert.deepEqual(
          requests.filter((u) => u !== url && !u.startsWith('data:')),
          [],
          'the page fetches nothing',
        );
      } finally {
        await context.close();
        await rm(profile, { recursive: true, force: true });
      }
    });
  });
});
