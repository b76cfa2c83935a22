/**
 * The snapshot table of an open image: the entries in memory, and replacing the table on disk
 * the way QEMU does (qcow2_write_snapshots): the new table is written whole at a new place and
 * made durable, the header is pointed at it in one write, and only then is the old table freed
 * (and its space given back to the host, as QEMU discards it).
 */
import type { BlockDriver } from '../../../block/driver.js';
import { encodeSnapshotTable, type Qcow2Snapshot } from '../codec/snapshot-table.js';
import type { Allocator } from '../image/allocator.js';
import type { HeaderStore } from '../image/header-store.js';
import type { MetadataWriter } from '../image/metadata-writer.js';

export interface SnapshotTableDeps {
  file: BlockDriver;
  writer: MetadataWriter;
  header: HeaderStore;
  allocator: Allocator;
  clusterSize: number;
}

export class SnapshotTable {
  readonly #d: SnapshotTableDeps;
  #entries: readonly Qcow2Snapshot[];
  /** Bytes of the table on disk now. */
  #bytes: number;

  constructor(deps: SnapshotTableDeps, entries: readonly Qcow2Snapshot[], bytes: number) {
    this.#d = deps;
    this.#entries = entries;
    this.#bytes = bytes;
  }

  get entries(): readonly Qcow2Snapshot[] {
    return this.#entries;
  }

  /** Makes `entries` the snapshot table (an empty one: no table, offset 0, as QEMU leaves it). */
  async replace(entries: readonly Qcow2Snapshot[]): Promise<void> {
    const { file, writer, header, allocator, clusterSize } = this.#d;
    const table = encodeSnapshotTable(entries);
    let offset = 0;
    if (entries.length > 0) {
      offset = await allocator.allocate(Math.ceil(table.length / clusterSize));
      // R1: the new table's refcount is durable before the header names it.
      await allocator.flushRefcounts();
      writer.claim('snapshot-table', offset, table.length);
      await writer.writeTable('snapshot-table', offset, table);
      await file.flush();
    }
    const old = { offset: header.header.snapshotsOffset, bytes: this.#bytes, count: header.header.nbSnapshots };
    await header.setSnapshotTable(offset, entries.length);
    this.#entries = entries;
    this.#bytes = table.length;
    if (old.count > 0 && old.bytes > 0) {
      writer.release('snapshot-table', old.offset, old.bytes);
      const first = Math.floor(old.offset / clusterSize);
      const end = Math.ceil((old.offset + old.bytes) / clusterSize);
      await allocator.free(first * clusterSize, end - first);
      // As QEMU discards the old table: its refcount first, then the hole (R4).
      await allocator.flushRefcounts();
      for (let c = first; c < end; c++) {
        if ((await allocator.refcountOf(c * clusterSize)) === 0) await file.discard(c * clusterSize, clusterSize);
      }
    }
  }
}
