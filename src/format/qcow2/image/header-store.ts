/**
 * The header of an open image: HeaderStore owns the decoded fields, and every change to them
 * (dirty and corrupt bits, autoclear bits, where the L1 and refcount tables are, the size) is
 * one small write to cluster 0, durable before the field changes in memory.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { writeU64 } from '../../../util/u64.js';
import { COMPAT_LAZY_REFCOUNTS, HEADER, INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from '../codec/constants.js';
import type { Qcow2Header } from '../codec/header.js';
import type { MetadataWriter } from './metadata-writer.js';

export class HeaderStore {
  readonly header: Qcow2Header;
  readonly #file: BlockDriver;
  readonly #writer: MetadataWriter;

  constructor(header: Qcow2Header, file: BlockDriver, writer: MetadataWriter) {
    this.header = header;
    this.#file = file;
    this.#writer = writer;
  }

  get dirty(): boolean {
    return (this.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0;
  }

  get corrupt(): boolean {
    return (this.header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0;
  }

  /** Refcount updates may lag; the dirty bit covers them until a clean close (R7, docs/architecture.md). */
  get lazyRefcounts(): boolean {
    return (this.header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0;
  }

  /** Sets or clears incompatible bits; durable on return (the bits guard what follows). */
  async setIncompatible(bits: number, on: boolean): Promise<void> {
    const value = on ? this.header.incompatibleFeatures | bits : this.header.incompatibleFeatures & ~bits;
    if (value === this.header.incompatibleFeatures || this.header.version < 3) return;
    await this.#writeU64(HEADER.incompatibleFeatures, value);
    await this.#file.flush();
    this.header.incompatibleFeatures = value;
  }

  /** Clears autoclear bits this implementation does not keep up to date (before the first write). */
  async clearAutoclear(): Promise<void> {
    if (this.header.version < 3 || this.header.autoclearFeatures === 0) return;
    await this.#writeU64(HEADER.autoclearFeatures, 0);
    await this.#file.flush();
    this.header.autoclearFeatures = 0;
  }

  /** Points the header at a new refcount table, offset and cluster count in one write. */
  async setRefcountTable(offset: number, clusters: number): Promise<void> {
    const buf = Buffer.alloc(12);
    writeU64(buf, 0, offset);
    buf.writeUInt32BE(clusters, 8);
    await this.#writer.writeTable('header', HEADER.refcountTableOffset, buf);
    await this.#file.flush();
    this.header.refcountTableOffset = offset;
    this.header.refcountTableClusters = clusters;
  }

  /** Points the header at a new L1 table, size and offset in one write. */
  async setL1Table(offset: number, entries: number): Promise<void> {
    const buf = Buffer.alloc(12);
    buf.writeUInt32BE(entries, 0);
    writeU64(buf, 4, offset);
    await this.#writer.writeTable('header', HEADER.l1Size, buf);
    await this.#file.flush();
    this.header.l1TableOffset = offset;
    this.header.l1Size = entries;
  }

  /**
   * Points the header at a new L1 table and sets the virtual size with it, in one write of
   * bytes 24 to 47 (one sector: it lands whole or not at all), for applying a snapshot.
   */
  async setActiveTable(size: number, l1Offset: number, entries: number): Promise<void> {
    const buf = Buffer.alloc(HEADER.l1TableOffset + 8 - HEADER.size);
    writeU64(buf, 0, size);
    buf.writeUInt32BE(this.header.cryptMethod, HEADER.cryptMethod - HEADER.size);
    buf.writeUInt32BE(entries, HEADER.l1Size - HEADER.size);
    writeU64(buf, HEADER.l1TableOffset - HEADER.size, l1Offset);
    await this.#writer.writeTable('header', HEADER.size, buf);
    await this.#file.flush();
    this.header.size = size;
    this.header.l1Size = entries;
    this.header.l1TableOffset = l1Offset;
  }

  /** Points the header at a new snapshot table, count and offset in one write. */
  async setSnapshotTable(offset: number, count: number): Promise<void> {
    const buf = Buffer.alloc(12);
    buf.writeUInt32BE(count, 0);
    writeU64(buf, 4, offset);
    await this.#writer.writeTable('header', HEADER.nbSnapshots, buf);
    await this.#file.flush();
    this.header.nbSnapshots = count;
    this.header.snapshotsOffset = offset;
  }

  /** Sets the virtual size (after the tables that cover it exist). */
  async setSize(size: number): Promise<void> {
    const buf = Buffer.alloc(8);
    writeU64(buf, 0, size);
    await this.#writer.writeTable('header', HEADER.size, buf);
    await this.#file.flush();
    this.header.size = size;
  }

  async #writeU64(offset: number, value: number): Promise<void> {
    const buf = Buffer.alloc(8);
    writeU64(buf, 0, value);
    await this.#writer.writeTable('header', offset, buf);
  }
}
