/**
 * The active L1 table and the L2 tables it points to: looking up what a guest cluster maps to,
 * and changing entries. L2Tables owns the L1 table in memory and the L2-table cache: every
 * lookup, change, write-out and flush of L2 tables goes through it.
 *
 * New L2 tables are written and flushed before the L1 entry points at them (R2), and their
 * refcount before that (R1, declared by the cache's dependency on the refcount cache). Callers
 * hold the metadata lock, except for cachedEntries(), which reads and in-place writes use
 * without it. That relies on one invariant every change here keeps: at every await, the L1 table
 * and the cached L2 tables map each cluster not held exclusively (cluster locks) as before the
 * change. An entry changes only under its cluster's exclusive lock; a copied L2 table is filled
 * before the L1 entry names it; a new L1 table replaces the old one in one assignment.
 *
 * R1 to R8 are the crash-safety rules in docs/architecture.md.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import { decodeL1, encodeL1, l2OffsetAt } from '../codec/l1-entry.js';
import { decodeL2, encodeL2, type L2Entry } from '../codec/l2-entry.js';
import type { Allocator } from './allocator.js';
import type { HeaderStore } from './header-store.js';
import type { MetadataCache } from './metadata-cache.js';
import type { MetadataWriter } from './metadata-writer.js';

export interface L2TablesDeps {
  file: BlockDriver;
  writer: MetadataWriter;
  /** The L2-table cache, from now on L2Tables' alone. */
  cache: MetadataCache;
  allocator: Allocator;
  /** Says where the L1 table is, and switches to a new one in one write. */
  header: HeaderStore;
  geometry: Qcow2Geometry;
}

export class L2Tables {
  readonly #d: L2TablesDeps;
  readonly #g: Qcow2Geometry;
  #l1: Buffer;
  #generation = 0;

  /** `l1`: the L1 table as read from the image (l1_size entries). */
  constructor(deps: L2TablesDeps, l1: Buffer) {
    this.#d = deps;
    this.#g = deps.geometry;
    this.#l1 = l1;
  }

  get l1Entries(): number {
    return this.#l1.length / 8;
  }

  /** Changes whenever an L1 or L2 entry may have changed: a mapping looked up earlier may be stale. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Declares that the entries about to change name data written just now: before L2 tables are
   * next written out, the file is flushed, so that the data is durable first (R3).
   */
  dependOnDataWrites(): void {
    this.#d.cache.dependOnFileFlush();
  }

  /** Writes every changed L2 table (after what they depend on); the file is not flushed. */
  writeBack(): Promise<void> {
    return this.#d.cache.writeBack();
  }

  /** Writes every changed L2 table and makes the file durable. */
  flush(): Promise<void> {
    return this.#d.cache.flush();
  }

  /**
   * Grows the L1 table to `entries` (R5): the bigger table is written whole at a new place and
   * made durable, the header is pointed at it in one write, then the old table is freed.
   */
  async growL1(entries: number): Promise<void> {
    if (entries <= this.l1Entries) return;
    const allocator = this.#d.allocator;
    const writer = this.#d.writer;
    const cs = this.#g.clusterSize;
    const bytes = entries * 8;
    const clusters = Math.ceil(bytes / cs);
    const offset = await allocator.allocate(clusters);
    const table = Buffer.alloc(bytes);
    this.#l1.copy(table);
    // R1 for the table's own clusters: their refcount is durable before the header names them.
    await allocator.flushRefcounts();
    writer.claim('l1', offset, bytes);
    await writer.writeTable('l1', offset, table);
    await this.#d.file.flush();
    const old = { offset: this.#d.header.header.l1TableOffset, bytes: this.#l1.length };
    await this.#d.header.setL1Table(offset, entries);
    this.#l1 = table;
    this.#generation++;
    if (old.bytes > 0) {
      writer.release('l1', old.offset, old.bytes);
      await allocator.free(old.offset, Math.ceil(old.bytes / cs));
    }
  }

  /**
   * Drops the L2 tables named past the first `entries` L1 entries, as QEMU does when an image
   * shrinks (the table keeps its size). The entries are zeroed on disk and made durable before
   * the tables are freed (R4).
   */
  async shrinkL1(entries: number): Promise<void> {
    const { file, writer, allocator, cache } = this.#d;
    const cs = this.#g.clusterSize;
    if (entries >= this.l1Entries) return;
    const from = this.#d.header.header.l1TableOffset + entries * 8;
    await writer.writeTable('l1', from, Buffer.alloc((this.l1Entries - entries) * 8));
    await file.flush();
    for (let i = this.l1Entries - 1; i >= entries; i--) {
      const l2 = this.l2Offset(i);
      if (l2 === 0) continue;
      this.#l1.fill(0, i * 8, i * 8 + 8);
      this.#generation++;
      // Its entries past the new end were cleared already; nothing in it is written again.
      cache.forget(l2);
      await allocator.free(l2, 1);
      if ((await allocator.refcountOf(l2)) === 0) writer.release('l2', l2, cs);
    }
  }

  /** A copy of the L1 table as it is now (l1_size entries). */
  l1Copy(): Buffer {
    return Buffer.from(this.#l1);
  }

  /**
   * Writes `table` over the L1 table in place and takes it as the table: for changes of the
   * COPIED flags alone, where every entry still names the table it named (each 8-byte entry
   * lies within a sector, so a torn write leaves every entry old or new).
   */
  async rewriteL1(table: Buffer): Promise<void> {
    if (table.length !== this.#l1.length)
      throw new VdiskError('EINVAL', 'An L1 table rewritten in place keeps its size');
    await this.#d.writer.writeTable('l1', this.#d.header.header.l1TableOffset, table);
    this.#l1 = Buffer.from(table);
    this.#generation++;
  }

  /**
   * Makes `table`, written and durable at `offset` already, the active L1 table, and `size` the
   * virtual size, in one header write (R5). The old table's clusters are the caller's to free.
   */
  async switchL1(offset: number, table: Buffer, size: number): Promise<{ offset: number; bytes: number }> {
    const old = { offset: this.#d.header.header.l1TableOffset, bytes: this.#l1.length };
    await this.#d.header.setActiveTable(size, offset, table.length / 8);
    this.#l1 = Buffer.from(table);
    this.#generation++;
    this.#d.writer.release('l1', old.offset, old.bytes);
    return old;
  }

  /**
   * Runs `fn` on the L2 table at `offset` (the active image's or a snapshot's) through the
   * cache; when `fn` returns true it changed the table, which is written back with the others.
   */
  async visitTable(offset: number, fn: (data: Buffer) => boolean | Promise<boolean>): Promise<void> {
    const table = await this.#d.cache.get(offset);
    try {
      if (await fn(table.data)) {
        this.#d.cache.markDirty(table);
        this.#generation++;
      }
    } finally {
      this.#d.cache.release(table);
    }
  }

  /** Drops a freed L2 table from the cache (its pending changes with it). */
  forgetTable(offset: number): void {
    this.#d.cache.forget(offset);
  }

  /** Host offset of the L2 table for L1 index `i` (0 = none). */
  l2Offset(i: number): number {
    return i < this.l1Entries ? l2OffsetAt(this.#l1, i, this.#g) : 0;
  }

  /** The entry for guest cluster `cluster`, read through the cache. */
  async entry(cluster: number): Promise<L2Entry> {
    return (await this.entries(cluster, 1))[0]!;
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
    if (l2Offset === 0) return new Array<L2Entry>(n).fill(UNALLOCATED);
    const table = await this.#d.cache.get(l2Offset);
    try {
      return decodeEntries(table.data, first, n, this.#g, this.#ownTable(l1Index));
    } finally {
      this.#d.cache.release(table);
    }
  }

  /** Like entries(), without waiting: undefined when the L2 table is not in the cache. */
  cachedEntries(cluster: number, count: number): L2Entry[] | undefined {
    const per = this.#g.l2Entries;
    const first = cluster % per;
    const n = Math.min(count, per - first);
    const l1Index = Math.floor(cluster / per);
    const l2Offset = this.l2Offset(l1Index);
    if (l2Offset === 0) return new Array<L2Entry>(n).fill(UNALLOCATED);
    const table = this.#d.cache.peek(l2Offset);
    if (!table) return undefined;
    return decodeEntries(table.data, first, n, this.#g, this.#ownTable(l1Index));
  }

  /**
   * Whether the L2 table of L1 index `i` is this image's alone (COPIED). In a table a snapshot
   * shares, no entry is the image's alone either, whatever its own flag says: a write there
   * copies the cluster (and the table) instead of changing what the snapshot keeps.
   */
  #ownTable(i: number): boolean {
    return (this.#l1[i * 8]! & 0x80) !== 0;
  }

  /** Makes sure the L2 table of `cluster` exists and may be changed in place (allocated if missing). */
  async prepareTable(cluster: number): Promise<void> {
    await this.#writableTable(Math.floor(cluster / this.#g.l2Entries));
  }

  /** Sets the entries of consecutive guest clusters, creating the L2 table if needed. */
  async setEntries(cluster: number, entries: L2Entry[]): Promise<void> {
    const per = this.#g.l2Entries;
    this.#generation++;
    try {
      await this.#setEntries(cluster, entries, per);
    } finally {
      // Also after: a lookup that ran while the entries were changing saw a half-changed table.
      this.#generation++;
    }
  }

  async #setEntries(cluster: number, entries: L2Entry[], per: number): Promise<void> {
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
    const current = decodeL1(this.#l1, l1Index, this.#g);
    if (current.l2Offset !== 0 && current.copied) return current.l2Offset;
    const allocator = this.#d.allocator;
    const cache = this.#d.cache;
    const writer = this.#d.writer;
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
        // Whatever the shared table says, nothing it names is this image's alone.
        clearCopiedFlags(table.data, this.#g.l2EntrySize);
      }
      // R1 then R2: the new table's refcount (unless refcounts are lazy), then the table itself,
      // are durable before L1 names it.
      await cache.flushTable(table);
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
      await writer.writeTable('l1', this.#d.header.header.l1TableOffset + l1Index * 8, entry);
    } catch (err) {
      cache.forget(offset);
      throw err;
    }
    entry.copy(this.#l1, l1Index * 8);
    this.#generation++;
    if (current.l2Offset !== 0) {
      // The snapshot keeps the old table; this image no longer references it (R4: L1 first).
      await this.#d.file.flush();
      await allocator.free(current.l2Offset, 1);
      // Unreferenced now (only a refcount that was wrong said a snapshot used it): no longer a table.
      if ((await allocator.refcountOf(current.l2Offset)) === 0)
        writer.release('l2', current.l2Offset, this.#g.clusterSize);
    }
    return offset;
  }
}

/** The entry of an empty cluster, the most common one: shared, so that lookups make no object for it. */
const UNALLOCATED: L2Entry = Object.freeze({ kind: 'unallocated' });

/** Clears the COPIED bit (bit 63 of an entry's first word) of every entry of an L2 table. */
export function clearCopiedFlags(data: Buffer, entrySize: number): void {
  for (let off = 0; off < data.length; off += entrySize) data[off]! &= 0x7f;
}

/** Entries `first` to `first + n - 1` of an L2 table; `own`: the table is the image's alone. */
function decodeEntries(data: Buffer, first: number, n: number, g: Qcow2Geometry, own: boolean): L2Entry[] {
  const out: L2Entry[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const off = (first + i) * 8;
    const empty = !g.extendedL2 && data.readUInt32BE(off) === 0 && data.readUInt32BE(off + 4) === 0;
    const entry = empty ? UNALLOCATED : decodeL2(data, first + i, g);
    out[i] =
      !own && (entry.kind === 'data' || entry.kind === 'zero') && entry.copied ? { ...entry, copied: false } : entry;
  }
  return out;
}
