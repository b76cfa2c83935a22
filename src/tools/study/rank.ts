/**
 * How combinations are compared. Each workload's figure (MiB/s, or IOPS for 4 KiB requests) is
 * divided by the best figure any combination reached on it, and a combination's score is the
 * geometric mean of those fractions: 1.00 would be the best at everything, 0.50 half as fast as
 * the best on a typical workload. Sub-scores take the same mean over a subset of the workloads
 * (writes only, first-touch writes only, steady-state writes only).
 */
import type { CombinationResult, StudyRun, WorkloadResult } from './runner.js';
import { type WorkloadName, workload } from './workloads.js';

/** The figure a workload is ranked by. */
export function figure(w: WorkloadResult): number {
  return workload(w.name).metric === 'IOPS' ? w.iops : w.mibPerSecond;
}

export function figureText(name: WorkloadName, value: number): string {
  return `${formatNumber(value)} ${workload(name).metric}`;
}

/** Three significant digits, no exponent: 0.0123, 1.23, 123, 12300. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return '-';
  if (value === 0) return '0';
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toString();
  return Number(value.toPrecision(3)).toString();
}

export type Best = ReadonlyMap<WorkloadName, number>;

/** The best figure of each workload over the combinations that ran. */
export function bestFigures(results: readonly CombinationResult[]): Best {
  const best = new Map<WorkloadName, number>();
  for (const r of results) {
    if (r.status !== 'ok') continue;
    for (const w of r.workloads) best.set(w.name, Math.max(best.get(w.name) ?? 0, figure(w)));
  }
  return best;
}

/** The geometric mean of a result's fractions of the best, over the named workloads; null if none. */
export function score(result: CombinationResult, best: Best, names?: readonly WorkloadName[]): number | null {
  if (result.status !== 'ok') return null;
  let logSum = 0;
  let n = 0;
  for (const w of result.workloads) {
    if (names && !names.includes(w.name)) continue;
    const top = best.get(w.name) ?? 0;
    if (top <= 0) continue;
    logSum += Math.log(Math.max(figure(w) / top, 1e-6));
    n++;
  }
  return n === 0 ? null : Math.exp(logSum / n);
}

export const WRITE_WORKLOADS: readonly WorkloadName[] = ['install', 'seq-write', 'db-write', 'db-rewrite'];
export const FIRST_TOUCH_WORKLOADS: readonly WorkloadName[] = ['install', 'seq-write', 'db-write'];
export const STEADY_WORKLOADS: readonly WorkloadName[] = ['db-rewrite'];
export const READ_WORKLOADS: readonly WorkloadName[] = ['seq-read', 'rand-read'];

export interface Ranked {
  result: CombinationResult;
  /** 1 for the best; null for combinations that did not run. */
  rank: number | null;
  score: number | null;
  writes: number | null;
  firstTouch: number | null;
  steady: number | null;
  reads: number | null;
}

/** Every combination, best first; those that did not run follow in matrix order. */
export function rankResults(run: Pick<StudyRun, 'results'>): Ranked[] {
  const best = bestFigures(run.results);
  const all = run.results.map((result) => ({
    result,
    rank: null as number | null,
    score: score(result, best),
    writes: score(result, best, WRITE_WORKLOADS),
    firstTouch: score(result, best, FIRST_TOUCH_WORKLOADS),
    steady: score(result, best, STEADY_WORKLOADS),
    reads: score(result, best, READ_WORKLOADS),
  }));
  const ran = all.filter((r) => r.score !== null).sort((a, b) => b.score! - a.score!);
  ran.forEach((r, i) => {
    r.rank = i + 1;
  });
  return [...ran, ...all.filter((r) => r.score === null)];
}
