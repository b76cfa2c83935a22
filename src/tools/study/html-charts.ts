/**
 * The charts of one engine's report: per workload, a bar chart grouped by cache mode and
 * coloured by preallocation (raw solid, qcow2 hatched), drawn twice (linear and logarithmic
 * scale); beside them creation time and space on disk, and the legend.
 */
import { CACHE_MODE_NAMES } from '../../block/cache-mode.js';
import type { Preallocation } from '../../block/preallocation.js';
import { fillOf } from './html-style.js';
import { PREALLOCATIONS_OF, STUDY_FORMATS, type StudyFormat } from './matrix.js';
import { figure, figureSpread, formatNumber } from './rank.js';
import type { StudyReport } from './report-json.js';
import type { CombinationResult, WorkloadResult } from './results.js';
import { type Bar, type BarGroup, esc, groupedBarChart, horizontalBarChart } from './svg-charts.js';
import { sizeText } from './table.js';
import { workload, workloadTitle } from './workloads.js';

function ms(v: number): string {
  return `${formatNumber(v)} ms`;
}

/** What a bar stands for, in words: the combination, or the export of an NBD study. */
export function cellName(report: StudyReport, r: CombinationResult): string {
  if (report.engine === 'nbd') return report.server?.uri ?? 'the export';
  return `${r.format} ${r.prealloc}, cache=${r.cache}`;
}

export function barTitle(head: string, r: CombinationResult, w: WorkloadResult | undefined): string {
  if (r.status !== 'ok' || !w) return `${head}: ${r.status === 'ok' ? 'not measured' : `${r.status}: ${r.reason}`}`;
  const l = w.latencyMs;
  const spread = figureSpread(w);
  const metric = workload(w.name).metric;
  return (
    `${head}: ${formatNumber(w.mibPerSecond)} MiB/s, ${formatNumber(w.iops)} IOPS ` +
    `(${metric}: median of ${w.samples.length}, ${formatNumber(spread.low)}–${formatNumber(spread.high)}); latency p50 ${ms(l.p50)}, ` +
    `p95 ${ms(l.p95)}, p99 ${ms(l.p99)}; ${w.flushes} flushes${w.flushes ? ` (p99 ${ms(w.flushLatencyMs.p99)})` : ''}` +
    `${w.cutShort ? '; stopped at the time limit' : ''}`
  );
}

/** Combinations in chart order: format, then preallocation, as the matrix lists them. */
export function seriesOf(report: StudyReport): Array<{ format: StudyFormat; prealloc: Preallocation }> {
  const out: Array<{ format: StudyFormat; prealloc: Preallocation }> = [];
  for (const format of STUDY_FORMATS) {
    for (const prealloc of PREALLOCATIONS_OF[format]) {
      if (report.results.some((r) => r.format === format && r.prealloc === prealloc)) out.push({ format, prealloc });
    }
  }
  return out;
}

export function workloadFigure(report: StudyReport, name: WorkloadResult['name']): string {
  const def = workload(name);
  const caches = CACHE_MODE_NAMES.filter((c) => report.results.some((r) => r.cache === c));
  const series = seriesOf(report);
  const groups: BarGroup[] = caches.map((cache) => ({
    label: report.engine === 'nbd' ? "the export, with its server's settings" : cache,
    bars: series.flatMap(({ format, prealloc }, i): Bar[] => {
      const r = report.results.find((x) => x.format === format && x.prealloc === prealloc && x.cache === cache);
      if (!r) return [];
      const w = r.workloads.find((x) => x.name === name);
      return [
        {
          value: r.status === 'ok' && w ? figure(w) : null,
          fill: fillOf(format, prealloc),
          title: barTitle(cellName(report, r), r, w),
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
    groupedBarChart({
      groups,
      unit: def.metric,
      scale,
      label: `${workloadTitle(name, report.evictedReads)}: ${def.metric} by cache mode`,
    });
  return (
    `<figure data-workload="${name}"><h3>${esc(workloadTitle(name, report.evictedReads))} <small>(${def.metric}, ${def.queueDepth} in flight)</small></h3>` +
    `<figcaption>${esc(def.description)}</figcaption>${chart('linear')}${chart('log')}</figure>`
  );
}

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export function sideCharts(report: StudyReport): string {
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
          className: 'bar-new',
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
  const disk = horizontalBarChart({ rows: diskRows, label: 'Space on disk', valueText: sizeText });
  return (
    `<figure data-side="create"><h3>Creation time</h3><figcaption>Seconds to create the ${sizeText(report.size)} image (median).</figcaption>` +
    horizontalBarChart({ rows: createRows, label: 'Creation time', valueText: (v) => `${formatNumber(v)} s` }) +
    `</figure><figure data-side="disk"><h3>Space on disk</h3><figcaption>Allocated bytes when new (pale) and after the workloads.</figcaption>${disk}</figure>`
  );
}

export function legend(report: StudyReport): string {
  const swatch = (fill: string) =>
    `<svg width="22" height="12" aria-hidden="true"><rect width="22" height="12" fill="${fill}"/></svg>`;
  if (report.engine === 'nbd') return '';
  const items = seriesOf(report).map(
    ({ format, prealloc }) => `<span>${swatch(fillOf(format, prealloc))} ${format} ${prealloc}</span>`,
  );
  return `<div class="legend">${items.join('')}<span>× did not run</span></div>`;
}
