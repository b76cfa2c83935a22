/**
 * The in-memory refcount table of `check` (QEMU's IMRT): for every host cluster, how many
 * references the metadata walk found. It is as wide as the image's refcounts need (8, 16 or 32
 * bits an entry), grows only as far as the walk and a rebuild need (the file's clusters, one
 * cluster past its end, the new refcount structures), and saturates at the largest refcount
 * the image can store.
 */
import { VdiskError } from '../../../block/errors.js';
import { maxRefcount, setRefcount } from '../codec/refcount-block.js';

type Entries = Uint8Array | Uint16Array | Uint32Array;

/** QEMU refuses to check images with more clusters than an int can count. */
const INT_MAX = 0x7fffffff;

export class ReferenceCounts {
  readonly order: number;
  /** The largest count an entry holds: the image's refcount maximum, at most 2^32 - 1. */
  readonly max: number;
  #entries: Entries;
  #length: number;

  constructor(order: number, clusters: number) {
    if (clusters > INT_MAX) throw new VdiskError('EOVERFLOW', 'The image file has too many clusters to check');
    this.order = order;
    this.max = Math.min(maxRefcount(order), 0xffffffff);
    this.#entries = this.#alloc(Math.max(clusters, 16));
    this.#length = clusters;
  }

  /** Clusters described (the file's, plus what was counted or allocated past its end). */
  get length(): number {
    return this.#length;
  }

  get(cluster: number): number {
    return cluster < this.#length ? this.#entries[cluster]! : 0;
  }

  set(cluster: number, value: number): void {
    this.grow(cluster + 1);
    this.#entries[cluster] = value;
  }

  /**
   * Adds `weight` references to `cluster`. Returns how many of them did not fit (the count
   * stays at the maximum), which the caller reports as overflows.
   */
  add(cluster: number, weight: number): number {
    this.grow(cluster + 1);
    const now = this.#entries[cluster]!;
    const room = this.max - now;
    if (weight <= room) {
      this.#entries[cluster] = now + weight;
      return 0;
    }
    this.#entries[cluster] = this.max;
    return weight - room;
  }

  /** Makes `clusters` entries exist (new ones are 0). */
  grow(clusters: number): void {
    if (clusters <= this.#length) return;
    if (clusters > INT_MAX) throw new VdiskError('EOVERFLOW', 'The image file has too many clusters to check');
    if (clusters > this.#entries.length) {
      const bigger = this.#alloc(Math.min(INT_MAX, Math.max(clusters, this.#entries.length * 2)));
      bigger.set(this.#entries.subarray(0, this.#length));
      this.#entries = bigger;
    }
    this.#length = clusters;
  }

  /** Forgets every count (before a second walk), keeping the length. */
  clear(): void {
    this.#entries.fill(0);
  }

  /**
   * Allocates `count` contiguous clusters at the end (after everything counted and the whole
   * file), counting each once. Returns the first cluster index.
   */
  allocateAtEnd(count: number): number {
    const first = this.#length;
    this.grow(first + count);
    for (let c = first; c < first + count; c++) this.#entries[c] = 1;
    return first;
  }

  /** True when some cluster of [first, end) has a non-zero count. */
  anyIn(first: number, end: number): boolean {
    const stop = Math.min(end, this.#length);
    for (let c = first; c < stop; c++) if (this.#entries[c] !== 0) return true;
    return false;
  }

  /** The refcount block that describes clusters [first, first + perBlock), encoded for the disk. */
  encodeBlock(first: number, perBlock: number, clusterSize: number): Buffer {
    const block = Buffer.alloc(clusterSize);
    const stop = Math.min(first + perBlock, this.#length);
    for (let c = first; c < stop; c++) {
      const value = this.#entries[c]!;
      if (value !== 0) setRefcount(block, c - first, this.order, value);
    }
    return block;
  }

  #alloc(n: number): Entries {
    if (this.order <= 3) return new Uint8Array(n);
    if (this.order === 4) return new Uint16Array(n);
    return new Uint32Array(n);
  }
}
