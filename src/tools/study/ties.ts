/**
 * Ranking with ties. A figure measured a few times on a shared machine is a range, not a point,
 * and ordering two combinations whose ranges overlap reports the noise, not the combinations:
 * those orders are what make two runs' rankings disagree. So combinations are ordered by their
 * median, and a combination within the measured spread of its group's leader (the best of the
 * group) shares the group's rank instead of getting one of its own.
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
  /** 1 for the best median, without ties: the strict order. */
  position: number;
  /** The position of the group's leader: what the report shows ("3=" when tied). */
  rank: number;
  /** The mean position of the group: what rank correlations use. */
  meanRank: number;
  /** True when the group has more than one member. */
  tied: boolean;
}

/**
 * Ranks, index for index with `values` (larger is better). Groups are formed from the best down:
 * each group's leader takes in every following value that ties with it, and the first that does
 * not leads the next group. Equal medians keep their input order.
 */
export function rankWithTies(values: readonly Spread[], floor = TIE_FLOOR): TiedRank[] {
  const order = values.map((_, i) => i).sort((a, b) => values[b]!.median - values[a]!.median || a - b);
  const out = new Array<TiedRank>(values.length);
  for (let start = 0; start < order.length; ) {
    const leader = values[order[start]!]!;
    let end = start + 1;
    while (end < order.length && isTie(leader, values[order[end]!]!, floor)) end++;
    for (let k = start; k < end; k++) {
      out[order[k]!] = { position: k + 1, rank: start + 1, meanRank: (start + 1 + end) / 2, tied: end - start > 1 };
    }
    start = end;
  }
  return out;
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

/** Spearman's ρ of two rankings with ties: Pearson's correlation of the groups' mean ranks. */
export function tiedSpearman(a: readonly Spread[], b: readonly Spread[], floor = TIE_FLOOR): number | null {
  if (a.length !== b.length) return null;
  return pearson(
    rankWithTies(a, floor).map((r) => r.meanRank),
    rankWithTies(b, floor).map((r) => r.meanRank),
  );
}
