/**
 * Ranking with ties. A figure measured a few times on a shared machine is a range, not a point,
 * and ordering two combinations whose ranges overlap reports the noise, not the combinations:
 * those orders are what make two runs' rankings disagree. So each pair of combinations is either
 * ordered (their ranges apart, and more than the floor apart) or tied, and a combination's rank
 * is the range of places it could take: from one after those clearly better, to that plus the
 * number it ties with. Ties are pairwise, not groups: a group would tie its ends together even
 * where they are clearly apart, and where its boundaries fall depends on the noise.
 */

/** A figure and the range its samples spread over. */
export interface Spread {
  median: number;
  low: number;
  high: number;
}

/**
 * Differences smaller than this fraction of the larger figure are ties even where the samples
 * happen not to overlap: no run on a machine shared with other work resolves them.
 */
export const TIE_FLOOR = 0.05;

function medianOf(sorted: readonly number[]): number {
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * The median and range of samples; with five or more, the lowest and the highest are left out of
 * the range, so that one burst of other work does not make everything a tie.
 */
export function spreadOf(samples: readonly number[]): Spread {
  if (samples.length === 0) return { median: 0, low: 0, high: 0 };
  const sorted = [...samples].sort((a, b) => a - b);
  const trim = sorted.length >= 5 ? 1 : 0;
  return { median: medianOf(sorted), low: sorted[trim]!, high: sorted[sorted.length - 1 - trim]! };
}

/** True when `worse` (the smaller median) cannot be told from `better`. */
export function isTie(better: Spread, worse: Spread, floor = TIE_FLOOR): boolean {
  return worse.high >= better.low || worse.median >= better.median * (1 - floor);
}

export interface TiedRank {
  /** 1 for the best median: the strict order. */
  position: number;
  /** The best place it could take: one after the combinations clearly better. */
  best: number;
  /** The worst place: `best` plus the number of combinations it ties with. */
  worst: number;
  /** The middle of that range, what rank correlations use (Spearman's with ties, ties.ts). */
  meanRank: number;
  /** How many other combinations it ties with. */
  ties: number;
}

/** Ranks, index for index with `values` (larger is better); equal medians keep their input order. */
export function rankWithTies(values: readonly Spread[], floor = TIE_FLOOR): TiedRank[] {
  const order = values.map((_, i) => i).sort((a, b) => values[b]!.median - values[a]!.median || a - b);
  const position = new Array<number>(values.length);
  order.forEach((index, k) => {
    position[index] = k + 1;
  });
  return values.map((v, i) => {
    let better = 0;
    let ties = 0;
    for (const [j, w] of values.entries()) {
      if (i === j) continue;
      const wFirst = position[j]! < position[i]!;
      if (wFirst ? isTie(w, v, floor) : isTie(v, w, floor)) ties++;
      else if (wFirst) better++;
    }
    return {
      position: position[i]!,
      best: better + 1,
      worst: better + 1 + ties,
      meanRank: better + 1 + ties / 2,
      ties,
    };
  });
}

/** Pearson's correlation; null with fewer than three pairs or when either side has no spread. */
export function pearson(a: readonly number[], b: readonly number[]): number | null {
  if (a.length !== b.length || a.length < 3) return null;
  const mean = (xs: readonly number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const ma = mean(a);
  const mb = mean(b);
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - ma) * (b[i]! - mb);
    da += (a[i]! - ma) ** 2;
    db += (b[i]! - mb) ** 2;
  }
  return da === 0 || db === 0 ? null : num / Math.sqrt(da * db);
}

/** Spearman's ρ of two rankings with ties: Pearson's correlation of the middles of the rank ranges. */
export function tiedSpearman(a: readonly Spread[], b: readonly Spread[], floor = TIE_FLOOR): number | null {
  if (a.length !== b.length) return null;
  return pearson(
    rankWithTies(a, floor).map((r) => r.meanRank),
    rankWithTies(b, floor).map((r) => r.meanRank),
  );
}
