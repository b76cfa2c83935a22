/**
 * The refcounts as the image stores them, read as QEMU's qcow2_get_refcount reads them during a
 * check: the table entry's offset bits (reserved bits ignored), 0 for clusters no block covers,
 * an error for an unaligned block, zeros for a block past the end of the file. Repairs change
 * blocks in memory; writeBack() writes the changed ones.
 */
import { VdiskError } from '../../../block/errors.js';
import { hex64, TWO_POW_32 } from '../../../util/u64.js';
import { getRefcount, setRefcount } from '../codec/refcount-block.js';
import type { CheckContext } from './context.js';

/** A refcount that cannot be read: the text is strerror's, as in "Can't get refcount for cluster 3: …". */
export class RefcountReadError {
  constructor(readonly reason: string) {}
}

const CACHE_CLEAN_BLOCKS = 64;

export type BlockPointer =
  | { kind: 'none' }
  | { kind: 'block'; offset: number }
  | { kind: 'unaligned'; offset: number }
  /** An offset of 2^53 or more: far past the end of any file, so it reads as zeros. */
  | { kind: 'beyond'; hex: string };

export class StoredRefcounts {
  readonly #ctx: CheckContext;
  readonly #table: Buffer;
  readonly entries: number;
  readonly perBlock: number;
  readonly #clean = new Map<number, Buffer>();
  readonly #dirty = new Map<number, Buffer>();
  /** The block peek() used last, by table index. */
  #lastIndex = -1;
  #lastBlock: Buffer | undefined;
  #signalled = false;

  constructor(ctx: CheckContext, table: Buffer) {
    this.#ctx = ctx;
    this.#table = table;
    this.entries = Math.floor(table.length / 8);
    this.perBlock = ctx.g.refcountBlockEntries;
  }

  /** The raw words of table entry `index`. */
  raw(index: number): { high: number; low: number } {
    return { high: this.#table.readUInt32BE(index * 8), low: this.#table.readUInt32BE(index * 8 + 4) };
  }

  hasReservedBits(index: number): boolean {
    return (this.raw(index).low & 0x1ff) !== 0;
  }

  /** Where table entry `index` points, reserved bits masked off (REFT_OFFSET_MASK). */
  pointer(index: number): BlockPointer {
    const { high, low } = this.raw(index);
    const lowOffset = (low & 0xfffffe00) >>> 0;
    if (high === 0 && lowOffset === 0) return { kind: 'none' };
    if (high > 0x1fffff) return { kind: 'beyond', hex: hex64(high, lowOffset) };
    const offset = high * TWO_POW_32 + lowOffset;
    if (offset % this.#ctx.cs !== 0) return { kind: 'unaligned', offset };
    return { kind: 'block', offset };
  }

  /** The stored refcount of cluster `cluster`, or why it cannot be read. */
  async get(cluster: number): Promise<number | RefcountReadError> {
    const now = this.peek(cluster);
    if (now !== undefined) return now;
    await this.load(cluster);
    return this.peek(cluster)!;
  }

  /**
   * The stored refcount of `cluster` without waiting: undefined when its block must be read
   * first (load()). Loops over many clusters call this, and load() only when it says so.
   */
  peek(cluster: number): number | RefcountReadError | undefined {
    const index = Math.floor(cluster / this.perBlock);
    let block: Buffer | undefined;
    if (index === this.#lastIndex) {
      block = this.#lastBlock;
    } else {
      if (index >= this.entries) return 0;
      const p = this.pointer(index);
      if (p.kind === 'none' || p.kind === 'beyond') return 0;
      if (p.kind === 'unaligned') {
        this.#signal(
          `Refblock offset 0x${p.offset.toString(16)} unaligned ` +
            `(reftable index: ${index === 0 ? '0' : `0x${index.toString(16)}`})`,
        );
        return new RefcountReadError('Input/output error');
      }
      block = this.#dirty.get(p.offset) ?? this.#clean.get(p.offset);
      if (!block) return undefined;
      this.#lastIndex = index;
      this.#lastBlock = block;
    }
    try {
      return getRefcount(block!, cluster % this.perBlock, this.#ctx.g.refcountOrder);
    } catch (err) {
      return new RefcountReadError(err instanceof VdiskError ? 'Value too large for defined data type' : String(err));
    }
  }

  /** Reads the block that holds the refcount of `cluster` into the cache. */
  async load(cluster: number): Promise<void> {
    const index = Math.floor(cluster / this.perBlock);
    const p = index < this.entries ? this.pointer(index) : undefined;
    if (p?.kind === 'block') await this.#block(p.offset);
  }

  /** Changes the stored refcount of `cluster` in memory (its block must exist and be aligned). */
  async set(cluster: number, value: number): Promise<boolean> {
    const index = Math.floor(cluster / this.perBlock);
    if (index >= this.entries) return false;
    const p = this.pointer(index);
    if (p.kind !== 'block' || p.offset >= this.#ctx.fileLength) return false;
    const block = await this.#block(p.offset);
    setRefcount(block, cluster % this.perBlock, this.#ctx.g.refcountOrder, value);
    this.#clean.delete(p.offset);
    this.#dirty.set(p.offset, block);
    this.#lastIndex = -1;
    return true;
  }

  /** Writes the changed blocks (the caller flushes). */
  async writeBack(): Promise<void> {
    for (const [offset, block] of this.#dirty) {
      await this.#ctx.file.write(offset, block);
      this.#clean.set(offset, block);
    }
    this.#dirty.clear();
    this.#trim();
  }

  async #block(offset: number): Promise<Buffer> {
    const dirty = this.#dirty.get(offset);
    if (dirty) return dirty;
    const cached = this.#clean.get(offset);
    if (cached) {
      this.#clean.delete(offset);
      this.#clean.set(offset, cached);
      return cached;
    }
    const block = await this.#ctx.readAt(offset, this.#ctx.cs);
    this.#clean.set(offset, block);
    this.#trim();
    return block;
  }

  #trim(): void {
    this.#lastIndex = -1;
    while (this.#clean.size > CACHE_CLEAN_BLOCKS) {
      const oldest = this.#clean.keys().next().value as number;
      this.#clean.delete(oldest);
    }
  }

  /** qcow2_signal_corruption, once per check: vdisk reports but never marks the image here. */
  #signal(message: string): void {
    if (this.#signalled) return;
    this.#signalled = true;
    this.#ctx.log(`qcow2: Image is corrupt: ${message}; further non-fatal corruption events will be suppressed`);
  }
}
