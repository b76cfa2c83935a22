/**
 * An LRU cache of one-cluster metadata tables (L2 tables or refcount blocks), written back
 * lazily, with declared write-out dependencies instead of hand-placed flushes:
 *
 * - `dependOn(other)`: before any dirty table of this cache is written, every dirty table of
 *   `other` is written and made durable (L2 tables depend on refcount blocks: R1).
 * - `dependOnFileFlush()`: before the next write-out, the image file is flushed (the data of a
 *   remapped cluster is durable before an L2 entry points at it: R3).
 *
 * R1 to R8 are the crash-safety rules in docs/architecture.md.
 *
 * Entries in use are pinned (`get`/`release`) so eviction never drops a table someone is
 * changing between two awaits.
 */
import type { BlockDriver } from '../../../block/driver.js';
import type { MetadataWriter } from './metadata-writer.js';
import { readInFile } from './read-in-file.js';

export interface CachedTable {
  readonly offset: number;
  readonly data: Buffer;
  dirty: boolean;
  pins: number;
  /** Position in the LRU order (higher = used more recently). */
  used: number;
}

export type TableKind = 'l2' | 'refblock';

export class MetadataCache {
  readonly kind: TableKind;
  readonly #file: BlockDriver;
  readonly #writer: MetadataWriter;
  readonly #clusterSize: number;
  #capacity: number;
  readonly #tables = new Map<number, CachedTable>();
  readonly #loading = new Map<number, Promise<CachedTable>>();
  #clock = 0;
  #dependency: MetadataCache | undefined;
  #needsFileFlush = false;

  constructor(kind: TableKind, file: BlockDriver, writer: MetadataWriter, clusterSize: number, capacity: number) {
    this.kind = kind;
    this.#file = file;
    this.#writer = writer;
    this.#clusterSize = clusterSize;
    this.#capacity = Math.max(4, capacity);
  }

  get capacity(): number {
    return this.#capacity;
  }

  get size(): number {
    return this.#tables.size;
  }

  dependOn(other: MetadataCache): void {
    this.#dependency = other;
  }

  dependOnFileFlush(): void {
    this.#needsFileFlush = true;
  }

  get hasDirty(): boolean {
    for (const table of this.#tables.values()) if (table.dirty) return true;
    return false;
  }

  /** The table at `offset`, read from the file if it is not cached. Pinned until released. */
  async get(offset: number): Promise<CachedTable> {
    const cached = this.#tables.get(offset);
    if (cached) return this.#pin(cached);
    let loading = this.#loading.get(offset);
    if (!loading) {
      loading = this.#load(offset);
      this.#loading.set(offset, loading);
    }
    try {
      return this.#pin(await loading);
    } finally {
      this.#loading.delete(offset);
    }
  }

  /**
   * The table at `offset` if it is cached, else undefined; for lookups that finish before the
   * next await (so it needs no pin).
   */
  peek(offset: number): CachedTable | undefined {
    const cached = this.#tables.get(offset);
    if (cached) cached.used = ++this.#clock;
    return cached;
  }

  /** A new all-zero table at `offset`, not read from the file (it was just allocated). Pinned, dirty. */
  async create(offset: number): Promise<CachedTable> {
    await this.#makeRoom();
    const table: CachedTable = { offset, data: Buffer.alloc(this.#clusterSize), dirty: true, pins: 0, used: 0 };
    this.#tables.set(offset, table);
    return this.#pin(table);
  }

  release(table: CachedTable): void {
    table.pins--;
  }

  markDirty(table: CachedTable): void {
    table.dirty = true;
  }

  /** Forgets a table whose cluster was freed; its pending changes are dropped. */
  forget(offset: number): void {
    this.#tables.delete(offset);
  }

  /** Writes every dirty table out (after what this cache depends on); does not flush the file. */
  async writeBack(): Promise<void> {
    const dirty = [...this.#tables.values()].filter((t) => t.dirty).sort((a, b) => a.offset - b.offset);
    if (dirty.length === 0) return;
    await this.#beforeWriteOut();
    for (const table of dirty) await this.#writeTable(table);
  }

  /**
   * Writes one table now, after the cache it depends on, and makes the file durable: for a
   * table just made, which is about to be named by the L1 table. What the next write-out owes
   * the file (dependOnFileFlush) stays owed: a new table names no new data.
   */
  async flushTable(table: CachedTable): Promise<void> {
    if (this.#dependency?.hasDirty) await this.#dependency.flush();
    await this.#writeTable(table);
    await this.#file.flush();
  }

  /** Writes every dirty table and makes the file durable. */
  async flush(): Promise<void> {
    await this.writeBack();
    await this.#file.flush();
  }

  /** Drops clean tables beyond a new capacity (l2-cache-size changes), writing dirty ones first. */
  async resize(capacity: number): Promise<void> {
    this.#capacity = Math.max(4, capacity);
    await this.#makeRoom();
  }

  async #load(offset: number): Promise<CachedTable> {
    await this.#makeRoom();
    const data = Buffer.allocUnsafe(this.#clusterSize);
    // A table past the end of a truncated file reads as zeros, as QEMU reads it.
    await readInFile(this.#file, offset, data);
    const existing = this.#tables.get(offset);
    if (existing) return existing;
    const table: CachedTable = { offset, data, dirty: false, pins: 0, used: 0 };
    this.#tables.set(offset, table);
    return table;
  }

  #pin(table: CachedTable): CachedTable {
    table.pins++;
    table.used = ++this.#clock;
    return table;
  }

  /** Evicts least recently used unpinned tables until there is room for one more. */
  async #makeRoom(): Promise<void> {
    while (this.#tables.size >= this.#capacity) {
      let victim: CachedTable | undefined;
      for (const table of this.#tables.values()) {
        if (table.pins === 0 && (!victim || table.used < victim.used)) victim = table;
      }
      if (!victim) return; // everything pinned: grow past capacity rather than deadlock
      if (victim.dirty) {
        await this.#beforeWriteOut();
        if (victim.dirty) await this.#writeTable(victim);
      }
      if (victim.pins === 0 && !victim.dirty) this.#tables.delete(victim.offset);
    }
  }

  async #beforeWriteOut(): Promise<void> {
    if (this.#dependency?.hasDirty) {
      await this.#dependency.flush();
      this.#needsFileFlush = false;
    }
    if (this.#needsFileFlush) {
      this.#needsFileFlush = false;
      await this.#file.flush();
    }
  }

  async #writeTable(table: CachedTable): Promise<void> {
    table.dirty = false;
    try {
      // A copy: the table may change while the write is in flight, and a half-updated
      // entry must never reach the disk.
      await this.#writer.writeTable(this.kind, table.offset, Buffer.from(table.data));
    } catch (err) {
      table.dirty = true;
      throw err;
    }
  }
}
