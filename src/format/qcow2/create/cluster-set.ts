/**
 * A set of cluster indexes kept as sorted, disjoint [start, end) runs: what the model of QEMU's
 * allocator uses for "clusters with refcount 1". Runs merge on insertion, so a set describing a
 * freshly created image stays a handful of runs however large the image.
 */

/** Sorted disjoint [start, end) runs of cluster indexes. */
export class ClusterSet {
  readonly starts: number[] = [];
  readonly ends: number[] = [];

  /** Index of the last run starting at or before c, or -1. */
  #find(c: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= c) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  has(c: number): boolean {
    const i = this.#find(c);
    return i >= 0 && this.ends[i]! > c;
  }

  /** The first used cluster in [s, e), or -1. */
  firstUsed(s: number, e: number): number {
    const i = this.#find(s);
    if (i >= 0 && this.ends[i]! > s) return s;
    const next = i + 1;
    return next < this.starts.length && this.starts[next]! < e ? this.starts[next]! : -1;
  }

  /** The end of the run holding used cluster c. */
  runEnd(c: number): number {
    return this.ends[this.#find(c)]!;
  }

  add(s: number, e: number): void {
    if (s >= e) return;
    if (this.firstUsed(s, e) !== -1) throw new Error(`internal: cluster ${s} allocated twice`);
    let i = this.#find(s) + 1;
    this.starts.splice(i, 0, s);
    this.ends.splice(i, 0, e);
    if (i + 1 < this.starts.length && this.starts[i + 1] === e) {
      this.ends[i] = this.ends[i + 1]!;
      this.starts.splice(i + 1, 1);
      this.ends.splice(i + 1, 1);
    }
    if (i > 0 && this.ends[i - 1] === s) {
      this.ends[i - 1] = this.ends[i]!;
      this.starts.splice(i, 1);
      this.ends.splice(i, 1);
      i--;
    }
  }

  remove(s: number, e: number): void {
    if (s >= e) return;
    const i = this.#find(s);
    if (i < 0 || this.ends[i]! < e) throw new Error(`internal: freeing unallocated cluster ${s}`);
    const runStart = this.starts[i]!;
    const runEnd = this.ends[i]!;
    this.starts.splice(i, 1);
    this.ends.splice(i, 1);
    let at = i;
    if (runStart < s) {
      this.starts.splice(at, 0, runStart);
      this.ends.splice(at, 0, s);
      at++;
    }
    if (e < runEnd) {
      this.starts.splice(at, 0, e);
      this.ends.splice(at, 0, runEnd);
    }
  }

  /** The last used cluster below `limit`, or -1. */
  lastBelow(limit: number): number {
    const i = this.#find(limit - 1);
    if (i < 0) return -1;
    return Math.min(this.ends[i]!, limit) - 1;
  }
}
