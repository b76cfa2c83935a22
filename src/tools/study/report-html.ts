/**
 * The study as one self-contained HTML page: inline CSS, inline SVG charts drawn at build time
 * (svg-charts.ts), a few lines of inline script (linear/log switch, table sorting) and the JSON
 * report embedded. A Content-Security-Policy forbids every network fetch, so the page works
 * offline and shows the same thing anywhere.
 *
 * Per workload, a bar chart grouped by cache mode and coloured by preallocation (raw solid,
 * qcow2 hatched); beside them creation time and space on disk; then the recommendation, the
 * ranked table with latencies, the workloads' definitions and the machine.
 */
import { writeFile } from 'node:fs/promises';
import { CACHE_MODE_NAMES } from '../../block/cache-mode.js';
import { fromSystemError } from '../../block/errors.js';
import type { Preallocation } from '../../block/preallocation.js';
import { busyNote } from './machine.js';
import { PREALLOCATIONS_OF, SAFETY_TEXT, STUDY_FORMATS, type StudyFormat } from './matrix.js';
import { figure, formatNumber } from './rank.js';
import type { StudyReport } from './report-json.js';
import type { CombinationResult, WorkloadResult } from './runner.js';
import { type Bar, type BarGroup, esc, groupedBarChart, horizontalBarChart } from './svg-charts.js';
import { sizeText } from './table.js';
import { workload } from './workloads.js';

/** Okabe–Ito colours, distinguishable with the common colour-vision deficiencies. */
export const PREALLOC_COLOR: Record<Preallocation, string> = {
  off: '#E69F00',
  metadata: '#56B4E9',
  falloc: '#009E73',
  full: '#0072B2',
};

function fillOf(format: StudyFormat, prealloc: Preallocation): string {
  return format === 'raw' ? PREALLOC_COLOR[prealloc] : `url(#hatch-${prealloc})`;
}

const CSS = `
:root{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;background:#fbfbfc}
body{margin:0 auto;max-width:1400px;padding:16px 24px}
h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin:22px 0 8px}h3{font-size:14px;margin:0 0 2px}
.meta{color:#596273;margin:2px 0}code{font:12px ui-monospace,monospace;background:#eef0f3;padding:1px 4px;border-radius:3px}
.busy{background:#fff4e5;border-left:4px solid #E69F00;padding:6px 12px;border-radius:4px}
.recommendation{background:#eef6ee;border-left:4px solid #009E73;padding:8px 14px;border-radius:4px}
.recommendation p{margin:6px 0}
.controls{display:flex;flex-wrap:wrap;gap:16px;align-items:center;margin:14px 0 6px}
.legend{display:flex;flex-wrap:wrap;gap:12px;align-items:center}.legend svg{vertical-align:middle}
.layout{display:grid;grid-template-columns:minmax(0,1fr) 340px;gap:20px;align-items:start}
@media (max-width:1000px){.layout{grid-template-columns:1fr}}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:8px 10px}
figcaption{font-size:12px;color:#596273;margin-bottom:4px}
aside{position:sticky;top:8px;display:flex;flex-direction:column;gap:14px}
svg.chart{width:100%;height:auto;display:block}
svg.chart-log{display:none}body.log svg.chart-log{display:block}body.log svg.chart-linear{display:none}
.grid{stroke:#e6e8eb}.axis{stroke:#8a93a0}.tick,.value,.row-label{font-size:10px;fill:#4a5260}
.unit{font-size:10px;fill:#596273}.group-label{font-size:11px;fill:#1d2430}
.missing path{stroke:#9aa1ab;stroke-width:1.5}.missing-text{font-size:10px;fill:#9aa1ab}
.bar:hover{opacity:.8}.bar-new{opacity:.45}
table{border-collapse:collapse;font-size:12px;background:#fff}th,td{padding:3px 7px;border-bottom:1px solid #e6e8eb;text-align:right;white-space:nowrap}
th{cursor:pointer;background:#f1f3f5;position:sticky;top:0}td.l,th.l{text-align:left}
tr.not-run td{color:#8a6d3b}.volatile{color:#b42318}.durable{color:#05603a}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dt{color:#596273}dd{margin:0}
.table-wrap{overflow-x:auto}
`;

const SCRIPT = `
(function(){
  var box=document.getElementById('log-scale');
  box.addEventListener('change',function(){document.body.classList.toggle('log',box.checked);});
  document.querySelectorAll('table.sortable th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=th.closest('table').tBodies[0];
      var rows=Array.prototype.slice.call(body.rows);
      var dir=th.dataset.dir==='desc'?1:-1;th.dataset.dir=dir===1?'asc':'desc';
      rows.sort(function(a,b){
        var x=a.cells[i],y=b.cells[i];if(!x||!y)return 0;
        var p=parseFloat(x.dataset.sort),q=parseFloat(y.dataset.sort);
        if(isNaN(p)&&isNaN(q))return x.textContent.localeCompare(y.textContent)*dir;
        if(isNaN(p))return 1;if(isNaN(q))return -1;return (p-q)*dir;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
})();
`;

function patterns(): string {
  const defs = Object.entries(PREALLOC_COLOR)
    .map(
      ([name, color]) =>
        `<pattern id="hatch-${name}" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">` +
        `<rect width="6" height="6" fill="${color}"/><rect width="2.2" height="6" fill="#ffffff" fill-opacity="0.6"/></pattern>`,
    )
    .join('');
  return `<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>${defs}</defs></svg>`;
}

function ms(v: number): string {
  return `${formatNumber(v)} ms`;
}

function barTitle(r: CombinationResult, w: WorkloadResult | undefined): string {
  const head = `${r.format} ${r.prealloc}, cache=${r.cache}`;
  if (r.status !== 'ok' || !w) return `${head}: ${r.status === 'ok' ? 'not measured' : `${r.status}: ${r.reason}`}`;
  const l = w.latencyMs;
  return (
    `${head}: ${formatNumber(w.mibPerSecond)} MiB/s, ${formatNumber(w.iops)} IOPS; latency p50 ${ms(l.p50)}, ` +
    `p95 ${ms(l.p95)}, p99 ${ms(l.p99)}; ${w.flushes} flushes${w.flushes ? ` (p99 ${ms(w.flushLatencyMs.p99)})` : ''}` +
    `${w.cutShort ? '; stopped at the time limit' : ''}`
  );
}

/** Combinations in chart order: format, then preallocation, as the matrix lists them. */
function seriesOf(report: StudyReport): Array<{ format: StudyFormat; prealloc: Preallocation }> {
  const out: Array<{ format: StudyFormat; prealloc: Preallocation }> = [];
  for (const format of STUDY_FORMATS) {
    for (const prealloc of PREALLOCATIONS_OF[format]) {
      if (report.results.some((r) => r.format === format && r.prealloc === prealloc)) out.push({ format, prealloc });
    }
  }
  return out;
}

function workloadFigure(report: StudyReport, name: WorkloadResult['name']): string {
  const def = workload(name);
  const caches = CACHE_MODE_NAMES.filter((c) => report.results.some((r) => r.cache === c));
  const series = seriesOf(report);
  const groups: BarGroup[] = caches.map((cache) => ({
    label: cache,
    bars: series.flatMap(({ format, prealloc }, i): Bar[] => {
      const r = report.results.find((x) => x.format === format && x.prealloc === prealloc && x.cache === cache);
      if (!r) return [];
      const w = r.workloads.find((x) => x.name === name);
      return [
        {
          value: r.status === 'ok' && w ? figure(w) : null,
          fill: fillOf(format, prealloc),
          title: barTitle(r, w),
          gapBefore: i > 0 && series[i - 1]!.format !== format ? 0.6 : 0,
          data: {
            workload: name,
            format,
            prealloc,
            cache,
            status: r.status,
            ...(w ? { p50: String(w.latencyMs.p50), p95: String(w.latencyMs.p95), p99: String(w.latencyMs.p99) } : {}),
          },
        },
      ];
    }),
  }));
  const chart = (scale: 'linear' | 'log') =>
    groupedBarChart({ groups, unit: def.metric, scale, label: `${def.title}: ${def.metric} by cache mode` });
  return (
    `<figure data-workload="${name}"><h3>${esc(def.title)} <small>(${def.metric}, ${def.queueDepth} in flight)</small></h3>` +
    `<figcaption>${esc(def.description)}</figcaption>${chart('linear')}${chart('log')}</figure>`
  );
}

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function sideCharts(report: StudyReport): string {
  const series = seriesOf(report);
  const of = (format: StudyFormat, prealloc: Preallocation) =>
    report.results.filter((r) => r.format === format && r.prealloc === prealloc);
  const createRows = series.map(({ format, prealloc }) => {
    const seconds = median(of(format, prealloc).flatMap((r) => r.create?.samples ?? []));
    return {
      label: `${format} ${prealloc}`,
      bars: [
        {
          value: seconds,
          fill: fillOf(format, prealloc),
          title: `${format} ${prealloc}: created in ${seconds === null ? 'n/a' : `${formatNumber(seconds)} s`} (median)`,
          data: { format, prealloc, kind: 'create' },
        },
      ],
    };
  });
  const diskRows = series.map(({ format, prealloc }) => {
    const rs = of(format, prealloc);
    const fresh = rs.find((r) => r.create)?.create?.allocatedBytes ?? null;
    const afters = rs.flatMap((r) => (r.afterRun ? [r.afterRun.allocatedBytes] : []));
    const after = afters.length ? Math.max(...afters) : null;
    return {
      label: `${format} ${prealloc}`,
      bars: [
        {
          value: fresh,
          fill: fillOf(format, prealloc),
          title: `${format} ${prealloc}: ${fresh === null ? 'n/a' : sizeText(fresh)} on disk when new`,
          data: { format, prealloc, kind: 'new' },
        },
        {
          value: after,
          fill: fillOf(format, prealloc),
          title: `${format} ${prealloc}: ${after === null ? 'n/a' : sizeText(after)} on disk after the workloads`,
          data: { format, prealloc, kind: 'after' },
        },
      ],
    };
  });
  const disk = horizontalBarChart({ rows: diskRows, label: 'Space on disk', valueText: sizeText }).replace(
    /(<rect class="bar)("[^>]*data-kind="new")/g,
    '$1 bar-new$2',
  );
  return (
    `<figure data-side="create"><h3>Creation time</h3><figcaption>Seconds to create the ${sizeText(report.size)} image (median).</figcaption>` +
    horizontalBarChart({ rows: createRows, label: 'Creation time', valueText: (v) => `${formatNumber(v)} s` }) +
    `</figure><figure data-side="disk"><h3>Space on disk</h3><figcaption>Allocated bytes when new (pale) and after the workloads.</figcaption>${disk}</figure>`
  );
}

function legend(report: StudyReport): string {
  const swatch = (fill: string) =>
    `<svg width="22" height="12" aria-hidden="true"><rect width="22" height="12" fill="${fill}"/></svg>`;
  const items = seriesOf(report).map(
    ({ format, prealloc }) => `<span>${swatch(fillOf(format, prealloc))} ${format} ${prealloc}</span>`,
  );
  return `<div class="legend">${items.join('')}<span>× did not run</span></div>`;
}

function cell(text: string, sort?: number | null, cls = ''): string {
  const s = sort === undefined ? '' : ` data-sort="${sort ?? ''}"`;
  return `<td${cls ? ` class="${cls}"` : ''}${s}>${esc(text)}</td>`;
}

function rankingTable(report: StudyReport): string {
  const head = [
    '<th class="l">#</th><th class="l">format</th><th class="l">prealloc</th><th class="l">cache</th><th class="l">crash safety</th>',
    '<th>score</th><th>writes</th><th>first touch</th><th>steady</th><th>reads</th>',
    ...report.workloads.map((n) => `<th>${esc(n)} ${workload(n).metric}</th><th>${esc(n)} p99 ms</th>`),
    '<th>create s</th><th>disk new</th><th>disk after</th>',
  ].join('');
  const rows = report.ranking.map((rank) => {
    const r = report.results.find((x) => x.id === rank.id)!;
    const lead =
      cell(rank.rank === null ? '-' : String(rank.rank), rank.rank, 'l') +
      cell(r.format, undefined, 'l') +
      cell(r.prealloc, undefined, 'l') +
      cell(r.cache, undefined, 'l') +
      `<td class="l ${r.safety}" title="${esc(SAFETY_TEXT[r.safety])}">${esc(r.safety)}</td>`;
    if (r.status !== 'ok') {
      const span = 5 + report.workloads.length * 2 + 3;
      return `<tr class="not-run" data-id="${esc(r.id)}">${lead}<td class="l" colspan="${span}">${esc(`${r.status}: ${r.reason}`)}</td></tr>`;
    }
    const score = (v: number | null) => cell(v === null ? '-' : v.toFixed(2), v);
    const perWorkload = report.workloads.map((n) => {
      const w = r.workloads.find((x) => x.name === n);
      return w
        ? cell(formatNumber(figure(w)), figure(w)) + cell(formatNumber(w.latencyMs.p99), w.latencyMs.p99)
        : '<td>-</td><td>-</td>';
    });
    return (
      `<tr data-id="${esc(r.id)}">${lead}${score(rank.score)}${score(rank.writes)}${score(rank.firstTouch)}${score(rank.steady)}${score(rank.reads)}` +
      perWorkload.join('') +
      cell(r.create ? formatNumber(r.create.seconds) : '-', r.create?.seconds) +
      cell(r.create ? sizeText(r.create.allocatedBytes) : '-', r.create?.allocatedBytes) +
      cell(r.afterRun ? sizeText(r.afterRun.allocatedBytes) : '-', r.afterRun?.allocatedBytes) +
      '</tr>'
    );
  });
  return `<div class="table-wrap"><table class="sortable" id="ranking"><thead><tr>${head}</tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}

function definitionList(entries: Array<[string, string]>): string {
  return `<dl>${entries.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`;
}

export function studyHtml(report: StudyReport): string {
  const m = report.machine;
  const fs = report.filesystem;
  const date = report.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  // The QEMU engine's numbers are qemu-nbd's block layer, driven through vdisk's NBD client.
  const title = report.engine === 'qemu' ? `vdisk study of QEMU (qemu-nbd), ${date}` : `vdisk study, ${date}`;
  const data = JSON.stringify(report).replace(/</g, '\\u003c');
  const machine = definitionList([
    ['OS', `${m.os} ${m.arch}, kernel ${m.kernel} (${m.kernelVersion})`],
    ['CPU', `${m.cpus} × ${m.cpuModel}`],
    ['memory', sizeText(m.memoryBytes)],
    ['Node.js', m.node],
    [
      'load average',
      `${report.load.start.map((v) => v.toFixed(2)).join(' ')} at the start, ${report.load.end.map((v) => v.toFixed(2)).join(' ')} at the end`,
    ],
    ['vdisk', m.vdisk],
    ['libuv I/O', m.uvUseIoUring === '1' ? 'io_uring (UV_USE_IO_URING=1)' : 'thread pool'],
    ['filesystem', `${fs.type} on ${fs.device ?? '?'} mounted at ${fs.mountPoint ?? '?'} (${fs.mountOptions ?? '?'})`],
    [
      'device',
      fs.rotational === null
        ? 'unknown'
        : fs.rotational
          ? 'rotational, says the kernel (a hard disk, or a virtual disk that does not tell)'
          : 'non-rotational, says the kernel (SSD or NVMe)',
    ],
    ['images made in', fs.dir],
    ['free space', fs.freeBytes === null ? '?' : sizeText(fs.freeBytes)],
  ]);
  const workloads = definitionList(report.workloadDefinitions.map((w) => [w.name, `${w.title}: ${w.description}`]));
  const notRun = report.results.filter((r) => r.status !== 'ok').length;
  const busy = busyNote(report.load, m.cpus, report.profile.rounds);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<link rel="icon" href="data:,">
<title>${esc(title)}</title><style>${CSS}</style></head>
<body>${patterns()}
<header><h1>${esc(title)}</h1>
<p class="meta">Profile ${esc(report.profile.name)}: ${sizeText(report.size)} images, workloads stopped after ${report.profile.workloadSeconds} s, ${report.profile.rounds} round(s), ${report.results.length} combinations (${notRun} did not run), ${formatNumber(report.seconds)} s in all.
${esc(fs.type)} on ${esc(fs.device ?? '?')}; ${m.cpus} × ${esc(m.cpuModel)}; kernel ${esc(m.kernel)}; Node.js ${esc(m.node)}; vdisk ${esc(m.vdisk)}.</p>
<p class="meta">Command: <code>${esc(report.command)}</code></p>${busy ? `<p class="busy">${esc(busy)}</p>` : ''}</header>
<section class="recommendation"><h2>Recommendation</h2>${report.recommendation.text.map((t) => `<p>${esc(t)}</p>`).join('')}</section>
<div class="controls"><label><input type="checkbox" id="log-scale"> logarithmic scale</label>${legend(report)}</div>
<div class="layout"><main class="charts">${report.workloads.map((n) => workloadFigure(report, n)).join('\n')}</main>
<aside>${sideCharts(report)}</aside></div>
<section><h2>Ranking</h2><p class="meta">Score: the geometric mean, over the workloads, of each figure divided by the best figure any combination reached (1.00 = best at everything). Click a heading to sort.</p>${rankingTable(report)}</section>
<section><h2>Workloads</h2>${workloads}</section>
<section><h2>Machine</h2>${machine}</section>
<script type="application/json" id="study-data">${data}</script>
<script>${SCRIPT}</script>
</body></html>
`;
}

export async function writeHtmlReport(file: string, report: StudyReport): Promise<void> {
  try {
    await writeFile(file, studyHtml(report));
  } catch (err) {
    throw fromSystemError(err, `Could not write '${file}'`);
  }
}
