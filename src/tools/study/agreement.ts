/**
 * How far two studies of the same storage agree (two engines, or two runs of one): Spearman's
 * rank correlation of the combinations, per workload and for the overall score, over the
 * combinations both ran. 1 is the same order, 0 no relation, −1 the reverse.
 *
 * Two figures are given: ρ of the rankings with ties (combinations within each other's measured
 * spread share their mean rank, ties.ts), which is the ranking the study reports, and ρ of the
 * strict order of the medians, which also counts the order of combinations no run can tell apart.
 */
import { bestFigures, figureSpread, scoreSpread } from './rank.js';
import type { StudyRun } from './results.js';
import { pearson, type Spread, tiedSpearman } from './ties.js';
import { RANKED_WORKLOADS, type WorkloadName } from './workloads.js';

export interface Agreement {
  /** A workload, or 'score' for the overall score. */
  what: WorkloadName | 'score';
  /** ρ of the rankings with ties; null with fewer than three combinations in common, or no spread. */
  rho: number | null;
  /** ρ of the strict order of the medians. */
  strictRho: number | null;
  /** Combinations compared. */
  n: number;
}

/** Ranks from 1, ties sharing their mean rank. */
function ranks(values: readonly number[]): number[] {
  const order = values.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]);
  const out = new Array<number>(values.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
    for (let k = i; k <= j; k++) out[order[k]![1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return out;
}

/** Spearman's ρ: Pearson's correlation of the ranks (equal values share their mean rank). */
export function spearman(a: readonly number[], b: readonly number[]): number | null {
  if (a.length !== b.length || a.length < 3) return null;
  return pearson(ranks(a), ranks(b));
}

function compare(what: Agreement['what'], pairs: ReadonlyArray<readonly [Spread, Spread]>): Agreement {
  const a = pairs.map((p) => p[0]);
  const b = pairs.map((p) => p[1]);
  return {
    what,
    rho: tiedSpearman(a, b),
    strictRho: spearman(
      a.map((s) => s.median),
      b.map((s) => s.median),
    ),
    n: pairs.length,
  };
}

type Compared = Pick<StudyRun, 'results' | 'workloads'>;

export function agreement(first: Compared, second: Compared): Agreement[] {
  const other = new Map(second.results.map((r) => [r.id, r]));
  const pairs = first.results
    .filter((r) => r.status === 'ok' && other.get(r.id)?.status === 'ok')
    .map((r) => [r, other.get(r.id)!] as const);
  const out: Agreement[] = [];
  for (const name of first.workloads.filter((w) => second.workloads.includes(w))) {
    const spreads: Array<readonly [Spread, Spread]> = [];
    for (const [x, y] of pairs) {
      const wx = x.workloads.find((w) => w.name === name);
      const wy = y.workloads.find((w) => w.name === name);
      if (wx && wy) spreads.push([figureSpread(wx), figureSpread(wy)]);
    }
    out.push(compare(name, spreads));
  }
  const bestA = bestFigures(first.results);
  const bestB = bestFigures(second.results);
  const scored = pairs
    .map(([x, y]) => [scoreSpread(x, bestA, RANKED_WORKLOADS), scoreSpread(y, bestB, RANKED_WORKLOADS)] as const)
    .filter((p): p is readonly [Spread, Spread] => p[0] !== null && p[1] !== null);
  out.push(compare('score', scored));
  return out;
}
