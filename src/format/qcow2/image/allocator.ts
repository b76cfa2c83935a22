/**
 * Finds free host clusters and takes them (refcount 0 -> 1). When the refcount block that must
 * count a cluster is missing, the allocator creates it, self-counted, in the range it covers;
 * when the refcount table is full, it builds a bigger one at the end of the image, writes it
 * whole and switches the header to it in one write (R5, docs/architecture.md). Callers hold the
 * image's metadata lock.
 *
 * The allocator owns where allocation looks next (the free hint, the high-water mark, the
 * packing position of compressed clusters); the refcounts are Refcounts', and where the
 * refcount table lies is the header's.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import { writeU64 } from '../../../util/u64.js';
import { newBlockIndexes, selfCoveringRefcountArea } from '../codec/refcount-area.js';
import { setRefcount } from '../codec/refcount-block.js';
import type { HeaderStore } from './header-store.js';
import type { MetadataWriter } from './metadata-writer.js';
import { type Refcounts, RefcountUnderflow } from './refcounts.js';

export interface AllocatorDeps {
  file: BlockDriver;
  writer: MetadataWriter;
  refcounts: Refcounts;
  /** Says where the refcount table is, and switches to a new one in one write. */
  header: HeaderStore;
  clusterBits: number;
}

/** QEMU's limit on the refcount table: 8 MiB. */
const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024;
/** Host offsets must stay below 2^56. */
const MAX_HOST_OFFSET = 2 ** 56;

export class Allocator {
  readonly #deps: AllocatorDeps;
  readonly #clusterSize: number;
  /** No free cluster lies below this one. */
  #freeHint = 0;
  /** One past the highest cluster in use or in the file. */
  #highWater: number;

  constructor(deps: AllocatorDeps) {
    this.#deps = deps;
    this.#clusterSize = 2 ** deps.clusterBits;
    this.#highWater = Math.ceil(deps.file.length() / this.#clusterSize);
  }

  /**
   * No cluster at or past this offset has been handed out since the image was opened, and the
   * file held nothing there then.
   */
  get untouchedFrom(): number {
    return this.#highWater * this.#clusterSize;
  }

  /** Takes `count` contiguous free clusters; returns the host offset of the first. */
  async allocate(count: number): Promise<number> {
    const { refcounts } = this.#deps;
    for (;;) {
      let start = this.#freeHint;
      let firstFree = -1;
      let run = 0;
      for (let c = start; run < count; c++) {
        if ((await refcounts.get(c)) === 0) {
          if (firstFree < 0) firstFree = c;
          run++;
        } else {
          run = 0;
          start = c + 1;
        }
      }
      if ((start + count) * this.#clusterSize > MAX_HOST_OFFSET) {
        throw new VdiskError('ENOSPC', 'The image has reached the largest host offset qcow2 allows');
      }
      // Free by refcount must also be free of the image's own tables, or a corrupt refcount
      // would hand out the header (or a live table) for new data.
      await this.#deps.writer.checkFree(start * this.#clusterSize, count * this.#clusterSize);
      const missing = await refcounts.update(start, count, +1);
      if (missing) {
        await this.#addRefblock(missing.tableIndex);
        continue;
      }
      // Everything below the first free cluster seen is in use; so is the run just taken.
      this.#freeHint = firstFree === start ? start + count : firstFree;
      this.#highWater = Math.max(this.#highWater, start + count);
      return start * this.#clusterSize;
    }
  }

  /** Where the next compressed cluster may go: a byte offset inside a cluster we own, or 0. */
  #nextCompressedByte = 0;

  /**
   * Takes `length` bytes for compressed data, packed after the previous compressed cluster when
   * they fit in the same host cluster (QEMU's alloc_bytes). Every host cluster the bytes touch
   * gains one reference.
   */
  async allocateBytes(length: number): Promise<number> {
    const cs = this.#clusterSize;
    const next = this.#nextCompressedByte;
    if (next !== 0 && next % cs !== 0 && (next % cs) + length <= cs) {
      await this.addReference(Math.floor(next / cs) * cs, 1);
      this.#nextCompressedByte = next + length;
      return next;
    }
    const offset = await this.allocate(Math.ceil(length / cs));
    this.#nextCompressedByte = offset + length;
    return offset;
  }

  /** Forgets the packing position (the cluster it pointed into may be freed). */
  resetCompressedPacking(): void {
    this.#nextCompressedByte = 0;
  }

  /** Writes every changed refcount block and makes them durable. */
  async flushRefcounts(): Promise<void> {
    if (this.#deps.refcounts.hasDirty) await this.#deps.refcounts.flush();
  }

  /**
   * Drops the refcount blocks that count nothing but themselves, as QEMU does after a shrink.
   * Their table entries are zeroed on disk and made durable first: no live cluster loses its
   * count. A block counted by another block is then freed there.
   */
  async dropUnusedRefblocks(): Promise<void> {
    const { refcounts, writer, file } = this.#deps;
    await this.flushRefcounts();
    const unused: number[] = [];
    for (let i = 0; i < refcounts.tableCapacity; i++) if (await refcounts.countsOnlyItself(i)) unused.push(i);
    if (unused.length === 0) return;
    for (const i of unused) await this.#writeTableEntry(i, 0);
    await file.flush();
    const offsets = unused.map((i) => refcounts.table[i]!);
    // Each block's own count goes where it is kept; a dropped block that kept it is written back
    // to its now unnamed cluster, as QEMU leaves it.
    for (const offset of offsets) await this.free(offset, 1);
    await this.flushRefcounts();
    for (const [k, i] of unused.entries()) {
      refcounts.dropBlock(i);
      writer.release('refblock', offsets[k]!, this.#clusterSize);
    }
  }

  /** Drops one reference to `count` clusters at `offset`; clusters reaching 0 become free. */
  async free(offset: number, count: number): Promise<void> {
    const cluster = offset / this.#clusterSize;
    const missing = await this.#deps.refcounts.update(cluster, count, -1).catch((err) => {
      // A reference the refcounts never counted: they cannot be trusted for allocation.
      if (err instanceof RefcountUnderflow) return this.#deps.writer.reportCorruption(err.message);
      throw err;
    });
    if (missing) {
      await this.#deps.writer.reportCorruption(
        `Freeing cluster 0x${offset.toString(16)} that no refcount block counts`,
      );
    }
    this.#freeHint = Math.min(this.#freeHint, cluster);
  }

  /** The refcount of the host cluster at `offset`. */
  refcountOf(offset: number): Promise<number> {
    return this.#deps.refcounts.get(Math.floor(offset / this.#clusterSize));
  }

  /** Adds a reference to clusters already in use (snapshots, shared clusters). */
  async addReference(offset: number, count: number): Promise<void> {
    const missing = await this.#deps.refcounts.update(offset / this.#clusterSize, count, +1);
    if (missing) {
      throw new VdiskError('ECORRUPT', `Referencing cluster 0x${offset.toString(16)} that no refcount block counts`);
    }
  }

  /**
   * Creates the refcount block for table index `tableIndex` at the first free cluster, as QEMU
   * does, so a contiguous allocation can still be found after it. The new block counts itself
   * when it lies in its own range; otherwise the block that covers it counts it.
   */
  async #addRefblock(tableIndex: number): Promise<void> {
    const { refcounts, writer, file } = this.#deps;
    if (tableIndex >= refcounts.tableCapacity) {
      await this.#growTable(tableIndex);
      return;
    }
    let cluster = this.#freeHint;
    while ((await refcounts.get(cluster)) !== 0) cluster++;
    const home = Math.floor(cluster / refcounts.perBlock);
    if (home !== tableIndex && (refcounts.table[home] ?? 0) === 0) {
      // The free cluster's own range has no block yet: make that one first (it counts itself).
      await this.#addRefblock(home);
      return;
    }
    const offset = cluster * this.#clusterSize;
    await writer.checkFree(offset, this.#clusterSize);
    const block = Buffer.alloc(this.#clusterSize);
    if (home === tableIndex) {
      setRefcount(block, cluster - tableIndex * refcounts.perBlock, refcounts.order, 1);
    } else {
      await refcounts.update(cluster, 1, +1);
      await this.flushRefcounts();
    }
    writer.claim('refblock', offset, this.#clusterSize);
    try {
      await writer.writeTable('refblock', offset, block);
      await file.flush();
      // The table entry changes in memory only once it is written: refcounts kept in a block
      // the table on disk does not name would be lost (refcount below references).
      await this.#writeTableEntry(tableIndex, offset);
    } catch (err) {
      writer.release('refblock', offset, this.#clusterSize);
      throw err;
    }
    refcounts.setTableEntry(tableIndex, offset);
    await file.flush();
    if (cluster === this.#freeHint) this.#freeHint = cluster + 1;
    this.#highWater = Math.max(this.#highWater, cluster + 1);
  }

  async #writeTableEntry(index: number, blockOffset: number): Promise<void> {
    const entry = Buffer.alloc(8);
    writeU64(entry, 0, blockOffset);
    const tableOffset = this.#deps.header.header.refcountTableOffset;
    await this.#deps.writer.writeTable('refcount-table', tableOffset + index * 8, entry);
  }

  /**
   * Builds a refcount table big enough for `neededIndex` past everything in use: the new table
   * first, then the new refcount blocks that count the table and themselves.
   */
  async #growTable(neededIndex: number): Promise<void> {
    const { refcounts, writer, file } = this.#deps;
    const perBlock = refcounts.perBlock;
    const oldEntries = refcounts.tableCapacity;
    const entriesPerCluster = this.#clusterSize / 8;
    const wanted = Math.max(neededIndex + 1, oldEntries * 2);
    const tableClusters = Math.ceil(wanted / entriesPerCluster);
    if (tableClusters * this.#clusterSize > MAX_REFCOUNT_TABLE_BYTES) {
      throw new VdiskError('ENOSPC', 'The refcount table would exceed 8 MiB');
    }
    const entries = tableClusters * entriesPerCluster;
    const start = this.#highWater;

    // The new table sits at [start, start+tableClusters); new blocks follow it, one for each
    // range the area reaches that has no block yet.
    const hasBlock = (index: number) => (refcounts.table[index] ?? 0) !== 0;
    const area = selfCoveringRefcountArea({
      start,
      others: 0,
      refcountsPerBlock: perBlock,
      tableClusters: () => tableClusters,
      hasBlock,
    });
    const newBlocks = newBlockIndexes(area, hasBlock);
    const end = start + area.clusters;
    await writer.checkFree(start * this.#clusterSize, (end - start) * this.#clusterSize);
    const table = Array.from({ length: entries }, (_, i) => refcounts.table[i] ?? 0);

    // Blocks that exist already count their part of the new area through the cache.
    for (let c = start; c < end; c++) {
      const j = Math.floor(c / perBlock);
      if (!newBlocks.includes(j)) {
        const missing = await refcounts.update(c, 1, +1);
        if (missing) throw new VdiskError('EIO', 'Refcount table growth lost track of a refcount block');
      }
    }
    await refcounts.flush();

    for (const [k, j] of newBlocks.entries()) {
      const blockOffset = (start + tableClusters + k) * this.#clusterSize;
      const block = Buffer.alloc(this.#clusterSize);
      for (let c = Math.max(start, j * perBlock); c < Math.min(end, (j + 1) * perBlock); c++) {
        setRefcount(block, c - j * perBlock, refcounts.order, 1);
      }
      writer.claim('refblock', blockOffset, this.#clusterSize);
      await writer.writeTable('refblock', blockOffset, block);
      table[j] = blockOffset;
    }

    const tableOffset = start * this.#clusterSize;
    const tableBuffer = Buffer.alloc(tableClusters * this.#clusterSize);
    for (const [i, entry] of table.entries()) writeU64(tableBuffer, i * 8, entry);
    writer.claim('refcount-table', tableOffset, tableBuffer.length);
    await writer.writeTable('refcount-table', tableOffset, tableBuffer);
    await file.flush();

    const h = this.#deps.header.header;
    const old = { offset: h.refcountTableOffset, clusters: h.refcountTableClusters };
    await this.#deps.header.setRefcountTable(tableOffset, tableClusters);
    refcounts.replaceTable(table);
    this.#highWater = end;

    writer.release('refcount-table', old.offset, old.clusters * this.#clusterSize);
    await this.free(old.offset, old.clusters);
  }
}
