/**
 * The engines side by side in one report: per workload, a chart with a pair of bars for every
 * combination (vdisk's, then QEMU's, pale and outlined, in the same paint), the rank correlation
 * of the engines' rankings, and each engine's recommendation.
 */
import { CACHE_MODE_NAMES } from '../../block/cache-mode.js';
import type { Agreement } from './agreement.js';
import { REPEATABLE_RHO, tiedRhoText } from './agreement-text.js';
import { engineTitle } from './engines-report.js';
import { barTitle, cellName, seriesOf } from './html-charts.js';
import { fillOf } from './html-style.js';
import { figure, formatNumber } from './rank.js';
import type { StudyReport } from './report-json.js';
import { type Bar, type BarGroup, esc, groupedBarChart } from './svg-charts.js';
import { type WorkloadName, workload, workloadTitle } from './workloads.js';

/** A workload's figures of both engines, cell by cell, grouped by cache mode. */
export function pairedWorkloadFigure(reports: readonly [StudyReport, StudyReport], name: WorkloadName): string {
  const def = workload(name);
  const [first] = reports;
  const caches = CACHE_MODE_NAMES.filter((c) => first.results.some((r) => r.cache === c));
  const series = seriesOf(first);
  const groups: BarGroup[] = caches.map((cache) => ({
    label: cache,
    bars: series.flatMap(({ format, prealloc }, i): Bar[] => {
      const cells = reports.map((rep) =>
        rep.results.find((x) => x.format === format && x.prealloc === prealloc && x.cache === cache),
      );
      if (cells.some((c) => c === undefined)) return [];
      const values = cells.map((r) => {
        const w = r!.workloads.find((x) => x.name === name);
        return r!.status === 'ok' && w ? figure(w) : null;
      });
      return cells.map((r, k): Bar => {
        const rep = reports[k]!;
        const w = r!.workloads.find((x) => x.name === name);
        const ratio =
          k > 0 && values[0] && values[k]
            ? `; ${formatNumber(values[k]! / values[0]!)}× ${engineTitle(first.engine)}`
            : '';
        return {
          value: values[k]!,
          fill: fillOf(format, prealloc),
          className: `engine-${rep.engine}`,
          title: `${engineTitle(rep.engine)}, ${barTitle(cellName(rep, r!), r!, w)}${ratio}`,
          gapBefore: k > 0 ? 0 : i === 0 ? 0 : series[i - 1]!.format !== format ? 1 : 0.5,
          data: { engine: rep.engine, workload: name, id: r!.id, format, prealloc, cache, status: r!.status },
        };
      });
    }),
  }));
  const chart = (scale: 'linear' | 'log') =>
    groupedBarChart({
      groups,
      unit: def.metric,
      scale,
      width: 1100,
      height: 280,
      label: `${workloadTitle(name, reports[0]!.evictedReads)}: ${reports.map((r) => engineTitle(r.engine)).join(' against ')}, ${def.metric} by cache mode`,
    });
  return (
    `<figure class="wide" data-compare="${name}"><h3>${esc(workloadTitle(name, reports[0]!.evictedReads))} <small>(${def.metric}, ${def.queueDepth} in flight)</small></h3>` +
    `<figcaption>Each pair: ${esc(engineTitle(reports[0].engine))} (solid), then ${esc(engineTitle(reports[1].engine))} (pale, outlined). ` +
    `${esc(def.description)}</figcaption>${chart('linear')}${chart('log')}</figure>`
  );
}

export function enginesLegend(reports: readonly StudyReport[]): string {
  const swatch = (cls: string) =>
    `<svg width="22" height="12" aria-hidden="true"><rect class="bar ${cls}" width="22" height="12" fill="#8a93a0"/></svg>`;
  return reports.map((r) => `<span>${swatch(`engine-${r.engine}`)} ${esc(engineTitle(r.engine))}</span>`).join('');
}

function rhoCell(rho: number | null, text: string): string {
  const cls = rho !== null && rho < REPEATABLE_RHO ? ' class="below"' : '';
  return `<td${cls} data-sort="${rho ?? ''}">${esc(text)}</td>`;
}

/** ρ per workload and for the score, with ties and strict. */
export function agreementTable(rows: readonly Agreement[]): string {
  const body = rows
    .map(
      (r) =>
        `<tr data-what="${esc(r.what)}"><td class="l">${esc(r.what)}</td>${rhoCell(r.rho, tiedRhoText(r))}${rhoCell(r.strictRho, r.strictRho === null ? '-' : r.strictRho.toFixed(2))}<td>${r.n}</td></tr>`,
    )
    .join('');
  return (
    '<table class="agreement" id="agreement"><thead><tr><th class="l">workload</th><th>ρ, ties shared</th>' +
    `<th>ρ, strict order</th><th>combinations</th></tr></thead><tbody>${body}</tbody></table>`
  );
}

/** Each engine's recommendation, side by side, and whether their picks agree. */
export function recommendations(reports: readonly StudyReport[]): string {
  const blocks = reports.map(
    (r) =>
      `<section class="recommendation" data-engine="${r.engine}"><h3>${esc(engineTitle(r.engine))}</h3>` +
      `${r.recommendation.text.map((t) => `<p>${esc(t)}</p>`).join('')}</section>`,
  );
  const picks = reports.map((r) => r.recommendation.pick?.id ?? null);
  let verdict = '';
  if (picks.length === 2 && picks[0] && picks[1]) {
    const [a, b] = reports;
    const tied = a!.recommendation.tiedWithPick.includes(picks[1]) || b!.recommendation.tiedWithPick.includes(picks[0]);
    verdict =
      picks[0] === picks[1]
        ? `<p class="meta">Both engines recommend ${esc(picks[0])}.</p>`
        : `<p class="meta">${esc(engineTitle(a!.engine))} recommends ${esc(picks[0])}, ${esc(engineTitle(b!.engine))} ${esc(picks[1])}` +
          `${tied ? ': within the measured spread of each other' : ''}.</p>`;
  }
  return `${verdict}<div class="pair">${blocks.join('')}</div>`;
}
