/**
 * The study as one self-contained HTML page: inline CSS, inline SVG charts drawn at build time
 * (svg-charts.ts), a few lines of inline script (linear/log switch, table sorting) and the JSON
 * report embedded. A Content-Security-Policy forbids every network fetch, so the page works
 * offline and shows the same thing anywhere.
 *
 * One engine: per workload a bar chart by cache mode and preallocation (html-charts.ts), creation
 * time and space on disk beside them, the recommendation and the ranked table. Two engines
 * (`--engine both`): the same page with the engines side by side (html-engines.ts): paired bars
 * per combination, the agreement of their rankings, a recommendation and a ranking per engine.
 * An NBD study: its one export's figures.
 */
import { writeFile } from 'node:fs/promises';
import { fromSystemError, VdiskError } from '../../block/errors.js';
import { engineTitle, isEnginesReport, reportsOf, type StudyDocument } from './engines-report.js';
import { legend, sideCharts, workloadFigure } from './html-charts.js';
import { agreementTable, enginesLegend, pairedWorkloadFigure, recommendations } from './html-engines.js';
import { CSS, patterns, SCRIPT } from './html-style.js';
import { definitionList, exportTable, machineList, rankingTable } from './html-tables.js';
import { busyNote } from './machine.js';
import { formatNumber } from './rank.js';
import type { StudyReport } from './report-json.js';
import { esc } from './svg-charts.js';
import { sizeText } from './table.js';

function titleOf(doc: StudyDocument, reports: readonly StudyReport[], date: string): string {
  if (isEnginesReport(doc)) return `vdisk study: ${reports.map((r) => engineTitle(r.engine)).join(' and ')}, ${date}`;
  // The QEMU engine's numbers are qemu-nbd's block layer, driven through vdisk's NBD client.
  if (reports[0]!.engine === 'qemu') return `vdisk study of QEMU (qemu-nbd), ${date}`;
  if (reports[0]!.engine === 'nbd') return `vdisk study of an NBD export, ${date}`;
  return `vdisk study, ${date}`;
}

function profileLine(report: StudyReport): string {
  const p = report.profile;
  const notRun = report.results.filter((r) => r.status !== 'ok').length;
  const what =
    report.engine === 'nbd'
      ? `the first ${sizeText(report.size)} of the export`
      : `${sizeText(report.size)} images, ${report.results.length} combinations (${notRun} did not run)`;
  return (
    `Profile ${esc(p.name)}: ${what}; each workload ${p.repeats} time(s), each time stopped after ${p.workloadSeconds} s; ` +
    `${p.rounds} round(s), ${formatNumber(report.seconds)} s in all.`
  );
}

function rankingSection(reports: readonly StudyReport[]): string {
  if (reports[0]!.engine === 'nbd') return `<section><h2>Figures</h2>${exportTable(reports[0]!)}</section>`;
  const tables = reports.map((r) =>
    reports.length > 1
      ? `<h3>${esc(engineTitle(r.engine))}</h3>${rankingTable(r, `ranking-${r.engine}`)}`
      : rankingTable(r, 'ranking'),
  );
  return (
    '<section><h2>Ranking</h2><p class="meta">Score: the geometric mean, over the workloads, of each figure divided by ' +
    'the best figure any combination reached (1.00 = best at everything). "3–7": the places a combination could take, ' +
    'tied with the combinations whose scores are within its measured spread, which no run here can order. Click a heading to sort.</p>' +
    `${tables.join('')}</section>`
  );
}

export function studyHtml(doc: StudyDocument): string {
  const reports = reportsOf(doc);
  const main = reports[0];
  if (!main) throw new VdiskError('EINVAL', 'A study report without any engine');
  const paired = reports.length >= 2 ? ([reports[0]!, reports[1]!] as const) : null;
  const m = main.machine;
  const fs = main.filesystem;
  const date = main.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const title = titleOf(doc, reports, date);
  const data = JSON.stringify(doc).replace(/</g, '\\u003c');
  const notices = isEnginesReport(doc)
    ? doc.notMeasured.map(
        (x) => `<p class="notice">${esc(`${engineTitle(x.engine)} was not measured: ${x.reason}`)}</p>`,
      )
    : [];
  const busy = busyNote(main.load, m.cpus, main.profile.rounds);
  const storage = fs ? `${esc(fs.type)} on ${esc(fs.device ?? '?')}` : `NBD export ${esc(main.server?.uri ?? '?')}`;
  const recommendation = paired
    ? recommendations(reports)
    : main.recommendation.text.map((t) => `<p>${esc(t)}</p>`).join('');
  const charts = paired
    ? `<section class="wide" data-section="engines"><h2>${esc(`${engineTitle(paired[0].engine)} against ${engineTitle(paired[1].engine)} on this storage`)}</h2>` +
      `<p class="meta">Spearman's ρ of the two engines' rankings (1: the same order, 0: no relation), per workload and for the overall score; ` +
      'below 0.9 in red.</p>' +
      `${agreementTable(isEnginesReport(doc) ? doc.agreement : [])}</section>` +
      main.workloads.map((n) => pairedWorkloadFigure(paired, n)).join('\n')
    : main.workloads.map((n) => workloadFigure(main, n)).join('\n');
  const aside =
    main.engine === 'nbd'
      ? ''
      : `<aside>${paired ? `<p class="meta">Images made by vdisk for both engines; space after ${esc(engineTitle(main.engine))}'s workloads.</p>` : ''}${sideCharts(main)}</aside>`;
  const workloads = definitionList(main.workloadDefinitions.map((w) => [w.name, `${w.title}: ${w.description}`]));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<link rel="icon" href="data:,">
<title>${esc(title)}</title><style>${CSS}</style></head>
<body>${patterns()}
<header><h1>${esc(title)}</h1>
<p class="meta">${profileLine(main)}
${storage}; ${m.cpus} × ${esc(m.cpuModel)}; kernel ${esc(m.kernel)}; Node.js ${esc(m.node)}; vdisk ${esc(m.vdisk)}.</p>
<p class="meta">Command: <code>${esc(doc.command)}</code></p>${notices.join('')}${busy ? `<p class="busy">${esc(busy)}</p>` : ''}</header>
<section class="recommendation"><h2>Recommendation</h2>${recommendation}</section>
<div class="controls"><label><input type="checkbox" id="log-scale"> logarithmic scale</label>${legend(main)}${paired ? `<div class="legend">${enginesLegend(reports)}</div>` : ''}</div>
<div class="layout${aside ? '' : ' single'}"><main class="charts">${charts}</main>
${aside}</div>
${rankingSection(reports)}
<section><h2>Workloads</h2>${workloads}</section>
<section><h2>Machine</h2>${machineList(main)}</section>
<script type="application/json" id="study-data">${data}</script>
<script>${SCRIPT}</script>
</body></html>
`;
}

export async function writeHtmlReport(file: string, doc: StudyDocument): Promise<void> {
  try {
    await writeFile(file, studyHtml(doc));
  } catch (err) {
    throw fromSystemError(err, `Could not write '${file}'`);
  }
}
