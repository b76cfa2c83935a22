/**
 * How combinations are compared. Each workload's figure (MiB/s, or IOPS for 4 KiB requests) is
 * divided by the best figure any combination reached on it, and a combination's score is the
 * geometric mean of those fractions (warm reads left out: they measure the host's RAM): 1.00 would be the best at everything, 0.50 half as fast as
 * the best on a typical workload. Sub-scores take the same mean over a subset of the workloads
 * (writes only, first-touch writes only, steady-state writes only).
 *
 * Each figure is the median of its samples (the repetitions and rounds), and its spread is the
 * range of the samples; a score's spread is the same mean taken over the low and the high ends.
 * Combinations whose scores are within each other's spread are tied, and a rank becomes the range
 * of places a combination could take (ties.ts).
 */
import type { Measurement } from './execute.js';
import type { CombinationResult, StudyRun, WorkloadResult } from './results.js';
import { rankWithTies, type Spread, spreadOf, type TiedRank } from './ties.js';
import { RANKED_WORKLOADS, type WorkloadName, workload } from './workloads.js';

/** The figure a workload is ranked by. */
export function figure(w: WorkloadResult): number {
  return figureOf(w.name, w);
}

function figureOf(name: WorkloadName, m: Measurement): number {
  return workload(name).metric === 'IOPS' ? m.iops : m.mibPerSecond;
}

/** A workload's figure with the range of its samples. */
export function figureSpread(w: WorkloadResult): Spread {
  const samples = w.samples.length > 0 ? w.samples : [w];
  return { ...spreadOf(samples.map((s) => figureOf(w.name, s))), median: figure(w) };
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
  return scoreSpread(result, best, names)?.median ?? null;
}

/**
 * The score, and its spread: the score of each repetition (the geometric mean of the j-th sample
 * of every workload) spreads as the score itself would between runs, independent noise of the
 * workloads averaging out as it does in the median's score.
 */
export function scoreSpread(result: CombinationResult, best: Best, names?: readonly WorkloadName[]): Spread | null {
  if (result.status !== 'ok') return null;
  const used = result.workloads.filter((w) => (!names || names.includes(w.name)) && (best.get(w.name) ?? 0) > 0);
  if (used.length === 0) return null;
  const meanOf = (fraction: (w: WorkloadResult) => number) =>
    Math.exp(used.reduce((sum, w) => sum + Math.log(Math.max(fraction(w), 1e-6)), 0) / used.length);
  const median = meanOf((w) => figure(w) / best.get(w.name)!);
  const draws = Math.min(...used.map((w) => w.samples.length));
  const perDraw: number[] = [];
  for (let j = 0; j < draws; j++) perDraw.push(meanOf((w) => figureOf(w.name, w.samples[j]!) / best.get(w.name)!));
  const spread = draws > 0 ? spreadOf(perDraw) : { median, low: median, high: median };
  return { median, low: Math.min(spread.low, median), high: Math.max(spread.high, median) };
}

export const WRITE_WORKLOADS: readonly WorkloadName[] = ['install', 'seq-write', 'db-write', 'db-rewrite'];
export const FIRST_TOUCH_WORKLOADS: readonly WorkloadName[] = ['install', 'seq-write', 'db-write'];
export const STEADY_WORKLOADS: readonly WorkloadName[] = ['db-rewrite'];
/** Cold reads: what the guest waits for at the storage (warm ones are reported, not scored). */
export const READ_WORKLOADS: readonly WorkloadName[] = ['seq-read', 'rand-read'];

export interface Ranked {
  result: CombinationResult;
  /** 1 for the best; null for combinations that did not run. */
  rank: number | null;
  /** The places it could take, given the combinations it ties with (ties.ts); null when it did not run. */
  tie: TiedRank | null;
  score: number | null;
  scoreSpread: Spread | null;
  writes: number | null;
  firstTouch: number | null;
  steady: number | null;
  reads: number | null;
}

/** "3" for a place of its own, "3–7" for the places a combination tied with others could take. */
export function rankText(tie: TiedRank | null): string {
  if (tie === null) return '-';
  return tie.ties === 0 ? String(tie.best) : `${tie.best}–${tie.worst}`;
}

/** Every combination, best first; those that did not run follow in matrix order. */
export function rankResults(run: Pick<StudyRun, 'results'>): Ranked[] {
  const best = bestFigures(run.results);
  const all = run.results.map(
    (result): Ranked => ({
      result,
      rank: null,
      tie: null,
      score: score(result, best, RANKED_WORKLOADS),
      scoreSpread: scoreSpread(result, best, RANKED_WORKLOADS),
      writes: score(result, best, WRITE_WORKLOADS),
      firstTouch: score(result, best, FIRST_TOUCH_WORKLOADS),
      steady: score(result, best, STEADY_WORKLOADS),
      reads: score(result, best, READ_WORKLOADS),
    }),
  );
  const ran = all.filter((r) => r.score !== null).sort((a, b) => b.score! - a.score!);
  const ties = rankWithTies(ran.map((r) => r.scoreSpread!));
  ran.forEach((r, i) => {
    r.rank = i + 1;
    r.tie = ties[i]!;
  });
  return [...ran, ...all.filter((r) => r.score === null)];
}
