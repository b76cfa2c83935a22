/**
 * The active L1 table and the L2 tables it points to: looking up what a guest cluster maps to,
 * and changing entries. New L2 tables are written and flushed before the L1 entry points at
 * them (rule R2), and their refcount before that (R1). Callers hold the metadata lock, except
 * for cachedEntries(), which reads and in-place writes use without it. That relies on one
 * invariant every change here keeps: at every await, the L1 table and the cached L2 tables map
 * each cluster not held exclusively (clusterLocks) as before the change. An entry changes only
 * under its cluster's exclusive lock; a copied L2 table is filled before the L1 entry names it;
 * a new L1 table replaces the old one in one assignment.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import { decodeL1, encodeL1 } from '../codec/l1-entry.js';
import { decodeL2, encodeL2, type L2Entry } from '../codec/l2-entry.js';
import type { Allocator } from './allocator.js';
import type { MetadataCache } from './metadata-cache.js';
import type { MetadataWriter } from './metadata-writer.js';

export interface L2TablesDeps {
  file: BlockDriver;
  writer: MetadataWriter;
  cache: MetadataCache;
  allocator: Allocator;
  geometry: Qcow2Geometry;
  l1Offset: number;
  /** The L1 table as read from the image (l1_size entries). */
  l1: Buffer;
  /** With lazy refcounts, L2 write-outs need not wait for refcount blocks. */
  lazyRefcounts: boolean;
}

export class L2Tables {
  readonly #d: L2TablesDeps;
  readonly #g: Qcow2Geometry;

  constructor(deps: L2TablesDeps) {
    this.#d = deps;
    this.#g = deps.geometry;
  }

  get l1Entries(): number {
    return this.#d.l1.length / 8;
  }

  /**
   * Grows the L1 table to `entries` (rule R5): the bigger table is written whole at a new place
   * and made durable, `switchHeader` points the header at it in one write, then the old table is
   * freed.
   */
  async growL1(entries: number, switchHeader: (offset: number, entries: number) => Promise<void>): Promise<void> {
    if (entries <= this.l1Entries) return;
    const { allocator, writer, file } = this.#d;
    const cs = this.#g.clusterSize;
    const bytes = entries * 8;
    const clusters = Math.ceil(bytes / cs);
    const offset = await allocator.allocate(clusters);
    const table = Buffer.alloc(bytes);
    this.#d.l1.copy(table);
    await allocator.flushRefcounts();
    writer.claim('l1', offset, bytes);
    await writer.writeTable('l1', offset, table);
    await file.flush();
    const old = { offset: this.#d.l1Offset, bytes: this.#d.l1.length };
    await switchHeader(offset, entries);
    this.#d.l1 = table;
    this.#d.l1Offset = offset;
    if (old.bytes > 0) {
      writer.release('l1', old.offset, old.bytes);
      await allocator.free(old.offset, Math.ceil(old.bytes / cs));
    }
  }

  /** Host offset of the L2 table for L1 index `i` (0 = none). */
  l2Offset(i: number): number {
    if (i >= this.l1Entries) return 0;
    // Most entries of a big L1 are empty: no decoding for them (a 1 PiB image has 2M entries).
    if (this.#d.l1.readUInt32BE(i * 8) === 0 && this.#d.l1.readUInt32BE(i * 8 + 4) === 0) return 0;
    return decodeL1(this.#d.l1, i, this.#g).l2Offset;
  }

  /** The entry for guest cluster `cluster`, read through the cache. */
  async entry(cluster: number): Promise<L2Entry> {
    const l1Index = Math.floor(cluster / this.#g.l2Entries);
    const l2Offset = this.l2Offset(l1Index);
    if (l2Offset === 0) return { kind: 'unallocated' };
    const table = await this.#d.cache.get(l2Offset);
    try {
      return decodeL2(table.data, cluster % this.#g.l2Entries, this.#g);
    } finally {
      this.#d.cache.release(table);
    }
  }

  /**
   * The entries of `count` guest clusters from `cluster`, stopping early at the end of an L2
   * table (so one table read serves the whole answer).
   */
  async entries(cluster: number, count: number): Promise<L2Entry[]> {
    const per = this.#g.l2Entries;
    const l1Index = Math.floor(cluster / per);
    const first = cluster % per;
    const n = Math.min(count, per - first);
    const l2Offset = this.l2Offset(l1Index);
    if (l2Offset === 0) return Array.from({ length: n }, () => ({ kind: 'unallocated' }) as L2Entry);
    const table = await this.#d.cache.get(l2Offset);
    try {
      const out: L2Entry[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = decodeL2(table.data, first + i, this.#g);
      return out;
    } finally {
      this.#d.cache.release(table);
    }
  }

  /** Like entries(), without waiting: undefined when the L2 table is not in the cache. */
  cachedEntries(cluster: number, count: number): L2Entry[] | undefined {
    const per = this.#g.l2Entries;
    const first = cluster % per;
    const n = Math.min(count, per - first);
    const l2Offset = this.l2Offset(Math.floor(cluster / per));
    if (l2Offset === 0) return Array.from({ length: n }, () => ({ kind: 'unallocated' }) as L2Entry);
    const table = this.#d.cache.peek(l2Offset);
    if (!table) return undefined;
    const out: L2Entry[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = decodeL2(table.data, first + i, this.#g);
    return out;
  }

  /** Sets the entries of consecutive guest clusters, creating the L2 table if needed. */
  async setEntries(cluster: number, entries: L2Entry[]): Promise<void> {
    const per = this.#g.l2Entries;
    let done = 0;
    while (done < entries.length) {
      const c = cluster + done;
      const l1Index = Math.floor(c / per);
      const first = c % per;
      const n = Math.min(entries.length - done, per - first);
      const l2Offset = await this.#writableTable(l1Index);
      const table = await this.#d.cache.get(l2Offset);
      try {
        for (let i = 0; i < n; i++) encodeL2(table.data, first + i, entries[done + i]!, this.#g);
        this.#d.cache.markDirty(table);
      } finally {
        this.#d.cache.release(table);
      }
      done += n;
    }
  }

  /** The offset of a table that may be changed in place for L1 index `i` (allocated if missing). */
  async #writableTable(l1Index: number): Promise<number> {
    if (l1Index >= this.l1Entries) {
      throw new VdiskError('EINVAL', `Guest offset beyond the L1 table (index ${l1Index} of ${this.l1Entries})`);
    }
    const current = decodeL1(this.#d.l1, l1Index, this.#g);
    if (current.l2Offset !== 0 && current.copied) return current.l2Offset;
    const { allocator, cache, writer, file } = this.#d;
    const offset = await allocator.allocate(1);
    writer.claim('l2', offset, this.#g.clusterSize);
    const table = await cache.create(offset);
    try {
      if (current.l2Offset !== 0) {
        // Shared with an internal snapshot: this image gets its own copy. The data clusters it
        // names stay shared (no COPIED bit), so writes to them copy on write in turn.
        const shared = await cache.get(current.l2Offset);
        shared.data.copy(table.data);
        cache.release(shared);
      }
      // R1 then R2: the new table's refcount, then the table itself, are durable before L1 names it.
      if (!this.#d.lazyRefcounts) await allocator.flushRefcounts();
      await writer.writeTable('l2', offset, Buffer.from(table.data));
      table.dirty = false;
      await file.flush();
    } finally {
      cache.release(table);
    }
    // The L1 entry changes in memory only once it is written: if the write fails, the image
    // on disk does not name the new table, so neither may later requests (their entries would
    // be lost). The new table's cluster is left allocated (a leak) since the write may have
    // landed after all.
    const entry = Buffer.alloc(8);
    encodeL1(entry, 0, { l2Offset: offset, copied: true }, this.#g);
    try {
      await writer.writeTable('l1', this.#d.l1Offset + l1Index * 8, entry);
    } catch (err) {
      cache.forget(offset);
      throw err;
    }
    entry.copy(this.#d.l1, l1Index * 8);
    if (current.l2Offset !== 0) {
      // The snapshot keeps the old table; this image no longer references it (R4: L1 first).
      await file.flush();
      await allocator.free(current.l2Offset, 1);
      // Unreferenced now (only a refcount that was wrong said a snapshot used it): no longer a table.
      if ((await allocator.refcountOf(current.l2Offset)) === 0)
        writer.release('l2', current.l2Offset, this.#g.clusterSize);
    }
    return offset;
  }
}
