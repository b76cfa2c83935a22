/**
 * Reading and changing cluster refcounts through the refcount table and the refcount-block
 * cache. This module never allocates: when the block that would count a cluster does not exist
 * it says so (MissingRefblock), and the allocator provides it (allocation does not recurse).
 *
 * Refcounts owns the in-memory refcount table and the refcount-block cache: every read, change
 * and write-out of refcount blocks goes through it.
 */
import { VdiskError } from '../../../block/errors.js';
import { getRefcount, maxRefcount, setRefcount } from '../codec/refcount-block.js';
import type { CachedTable, MetadataCache } from './metadata-cache.js';

/** The refcount block for table index `tableIndex` does not exist yet. */
export class MissingRefblock {
  constructor(readonly tableIndex: number) {}
}

/** A cluster being freed has no reference left to drop: the refcounts are wrong. */
export class RefcountUnderflow extends VdiskError {
  constructor(message: string) {
    super('ECORRUPT', message);
  }
}

export class Refcounts {
  readonly #cache: MetadataCache;
  readonly #clusterBits: number;
  readonly order: number;
  /** Refcount entries in one block. */
  readonly perBlock: number;
  readonly max: number;
  /** The refcount table, in memory; entries are host offsets of refcount blocks (0 = none). */
  #table: number[];

  constructor(cache: MetadataCache, clusterBits: number, order: number, table: number[]) {
    this.#cache = cache;
    this.#clusterBits = clusterBits;
    this.order = order;
    this.perBlock = 2 ** (clusterBits + 3 - order);
    this.max = maxRefcount(order);
    this.#table = table;
  }

  get table(): readonly number[] {
    return this.#table;
  }

  /** Entries the refcount table has room for. */
  get tableCapacity(): number {
    return this.#table.length;
  }

  replaceTable(table: number[]): void {
    this.#table = table;
  }

  setTableEntry(index: number, blockOffset: number): void {
    this.#table[index] = blockOffset;
  }

  /** Whether a refcount block changed since it was last written. */
  get hasDirty(): boolean {
    return this.#cache.hasDirty;
  }

  /** Writes every changed refcount block and makes the file durable. */
  flush(): Promise<void> {
    return this.#cache.flush();
  }

  /** Writes every changed refcount block (the file is not flushed). */
  writeBack(): Promise<void> {
    return this.#cache.writeBack();
  }

  /** The refcount of host cluster `cluster` (0 where no block counts it). */
  async get(cluster: number): Promise<number> {
    const tableIndex = Math.floor(cluster / this.perBlock);
    const blockOffset = this.#table[tableIndex] ?? 0;
    if (blockOffset === 0) return 0;
    const block = await this.#cache.get(blockOffset);
    try {
      return getRefcount(block.data, cluster % this.perBlock, this.order);
    } finally {
      this.#cache.release(block);
    }
  }

  /** How many host clusters of [0, clusters) have a refcount above 0, counting no further than `limit`. */
  async countInUse(clusters: number, limit: number): Promise<number> {
    let count = 0;
    for (let index = 0; index * this.perBlock < clusters && count < limit; index++) {
      const blockOffset = this.#table[index] ?? 0;
      if (blockOffset === 0) continue;
      const block = await this.#cache.get(blockOffset);
      try {
        const end = Math.min(this.perBlock, clusters - index * this.perBlock);
        for (let i = 0; i < end && count < limit; i++) if (getRefcount(block.data, i, this.order) !== 0) count++;
      } finally {
        this.#cache.release(block);
      }
    }
    return count;
  }

  /** Whether refcount block `index` counts nothing but, at most, itself. */
  async countsOnlyItself(index: number): Promise<boolean> {
    const blockOffset = this.#table[index] ?? 0;
    if (blockOffset === 0) return false;
    const own = blockOffset / 2 ** this.#clusterBits - index * this.perBlock;
    const block = await this.#cache.get(blockOffset);
    try {
      for (let i = 0; i < this.perBlock; i++) {
        if (i !== own && getRefcount(block.data, i, this.order) !== 0) return false;
      }
      return true;
    } finally {
      this.#cache.release(block);
    }
  }

  /** Forgets refcount block `index` (its table entry on disk is zero already). */
  dropBlock(index: number): void {
    const blockOffset = this.#table[index] ?? 0;
    if (blockOffset !== 0) this.#cache.forget(blockOffset);
    this.#table[index] = 0;
  }

  /** The last host cluster below `clusters` with a refcount above 0, or -1 when there is none. */
  async lastInUse(clusters: number): Promise<number> {
    for (let index = Math.ceil(clusters / this.perBlock) - 1; index >= 0; index--) {
      const blockOffset = this.#table[index] ?? 0;
      if (blockOffset === 0) continue;
      const block = await this.#cache.get(blockOffset);
      try {
        const first = index * this.perBlock;
        for (let c = Math.min(clusters, first + this.perBlock) - 1; c >= first; c--) {
          if (getRefcount(block.data, c - first, this.order) !== 0) return c;
        }
      } finally {
        this.#cache.release(block);
      }
    }
    return -1;
  }

  /**
   * Adds `delta` to the refcount of `count` clusters from `cluster`. Returns a MissingRefblock
   * (changing nothing) when a block does not exist yet; throws RefcountUnderflow or ECORRUPT on
   * overflow, also changing nothing.
   */
  async update(cluster: number, count: number, delta: number): Promise<MissingRefblock | undefined> {
    for (let c = cluster; c < cluster + count; c++) {
      const tableIndex = Math.floor(c / this.perBlock);
      if ((this.#table[tableIndex] ?? 0) === 0) return new MissingRefblock(tableIndex);
    }
    // Every value is checked before any changes: a refused update leaves no half-applied run.
    await this.#eachBlock(cluster, count, (block, c) => this.#next(block, c, delta));
    await this.#eachBlock(cluster, count, (block, c) => {
      setRefcount(block.data, c % this.perBlock, this.order, this.#next(block, c, delta));
      this.#cache.markDirty(block);
    });
    return undefined;
  }

  async #eachBlock(cluster: number, count: number, fn: (block: CachedTable, cluster: number) => void): Promise<void> {
    let c = cluster;
    while (c < cluster + count) {
      const tableIndex = Math.floor(c / this.perBlock);
      const block = await this.#cache.get(this.#table[tableIndex]!);
      try {
        const end = Math.min(cluster + count, (tableIndex + 1) * this.perBlock);
        for (; c < end; c++) fn(block, c);
      } finally {
        this.#cache.release(block);
      }
    }
  }

  #next(block: CachedTable, cluster: number, delta: number): number {
    const value = getRefcount(block.data, cluster % this.perBlock, this.order) + delta;
    const offset = cluster * 2 ** this.#clusterBits;
    if (value < 0) throw new RefcountUnderflow(`Refcount of cluster at 0x${offset.toString(16)} would drop below 0`);
    if (value > this.max) {
      throw new VdiskError('ECORRUPT', `Refcount of cluster at 0x${offset.toString(16)} would exceed ${this.max}`);
    }
    return value;
  }
}
