/**
 * How far two engines' studies of the same storage agree: Spearman's rank correlation of the
 * combinations' figures, per workload and for the overall score, over the combinations both ran.
 * 1 is the same order, 0 no relation, −1 the reverse.
 */
import { bestFigures, figure, score } from './rank.js';
import type { StudyRun } from './runner.js';
import type { WorkloadName } from './workloads.js';

export interface Agreement {
  /** A workload, or 'score' for the overall score. */
  what: WorkloadName | 'score';
  /** Null with fewer than three combinations in common, or when one side has no spread. */
  rho: number | null;
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

/** Spearman's ρ: Pearson's correlation of the ranks. */
export function spearman(a: readonly number[], b: readonly number[]): number | null {
  if (a.length !== b.length || a.length < 3) return null;
  const ra = ranks(a);
  const rb = ranks(b);
  const mean = (a.length + 1) / 2;
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i]! - mean) * (rb[i]! - mean);
    da += (ra[i]! - mean) ** 2;
    db += (rb[i]! - mean) ** 2;
  }
  return da === 0 || db === 0 ? null : num / Math.sqrt(da * db);
}

export function agreement(first: StudyRun, second: StudyRun): Agreement[] {
  const other = new Map(second.results.map((r) => [r.id, r]));
  const pairs = first.results
    .filter((r) => r.status === 'ok' && other.get(r.id)?.status === 'ok')
    .map((r) => [r, other.get(r.id)!] as const);
  const out: Agreement[] = [];
  for (const name of first.workloads.filter((w) => second.workloads.includes(w))) {
    const a: number[] = [];
    const b: number[] = [];
    for (const [x, y] of pairs) {
      const wx = x.workloads.find((w) => w.name === name);
      const wy = y.workloads.find((w) => w.name === name);
      if (wx && wy) {
        a.push(figure(wx));
        b.push(figure(wy));
      }
    }
    out.push({ what: name, rho: spearman(a, b), n: a.length });
  }
  const bestA = bestFigures(first.results);
  const bestB = bestFigures(second.results);
  const scored = pairs
    .map(([x, y]) => [score(x, bestA), score(y, bestB)] as const)
    .filter((p): p is readonly [number, number] => p[0] !== null && p[1] !== null);
  out.push({
    what: 'score',
    rho: spearman(
      scored.map((p) => p[0]),
      scored.map((p) => p[1]),
    ),
    n: scored.length,
  });
  return out;
}
