/**
 * The header of an open image: HeaderStore owns the decoded fields, and every change to them
 * (dirty and corrupt bits, autoclear bits, where the L1 and refcount tables are, the size) is
 * one small write to cluster 0, durable before the field changes in memory (the bitmaps
 * extension rewrites the cluster).
 */
import type { BlockDriver } from '../../../block/driver.js';
import { writeU64 } from '../../../util/u64.js';
import {
  AUTOCLEAR_BITMAPS,
  COMPAT_LAZY_REFCOUNTS,
  HEADER,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
} from '../codec/constants.js';
import { encodeHeaderCluster, type Qcow2Header } from '../codec/header.js';
import { type BitmapsExtension, decodeHeaderExtensions } from '../codec/header-extensions.js';
import type { MetadataWriter } from './metadata-writer.js';
import { readInFile } from './read-in-file.js';

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

  /**
   * Sets the autoclear bits to `value`; durable on return. Before the first write, the bits
   * this implementation does not keep up to date are cleared this way.
   */
  async setAutoclear(value: number): Promise<void> {
    if (this.header.version < 3 || this.header.autoclearFeatures === value) return;
    await this.#writeU64(HEADER.autoclearFeatures, value);
    await this.#file.flush();
    this.header.autoclearFeatures = value;
  }

  /**
   * Points the bitmaps extension at a new directory (or drops it, with the autoclear bitmaps
   * bit, when there is none): cluster 0 is rewritten whole, its other extensions as they are.
   */
  async setBitmapsExtension(bitmaps: BitmapsExtension | undefined): Promise<void> {
    const cluster0 = Buffer.alloc(2 ** this.header.clusterBits);
    await readInFile(this.#file, 0, cluster0);
    const ext = decodeHeaderExtensions(cluster0, { ...this.header, autoclearFeatures: 0 });
    const autoclear = bitmaps
      ? this.header.autoclearFeatures | AUTOCLEAR_BITMAPS
      : this.header.autoclearFeatures & ~AUTOCLEAR_BITMAPS;
    const header = { ...this.header, autoclearFeatures: autoclear };
    const out = encodeHeaderCluster(header, {
      backingFormat: ext.backingFormat,
      dataFile: ext.dataFile,
      fde: ext.fde,
      bitmaps,
      unknown: ext.unknown,
      backingFile: ext.backingFile,
      featureTable: ext.featureNames.length > 0,
    });
    await this.#writer.writeTable('header', 0, out);
    await this.#file.flush();
    this.header.autoclearFeatures = autoclear;
    this.header.backingFileOffset = out.readUInt32BE(HEADER.backingFileOffset + 4);
    this.header.backingFileSize = out.readUInt32BE(HEADER.backingFileSize);
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
