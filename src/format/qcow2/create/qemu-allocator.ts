/**
 * A model of QEMU 7.2's cluster allocator (block/qcow2-refcount.c, qcow2-cluster.c), replayed
 * without I/O so that create can write the very file `qemu-img create -f qcow2` writes.
 *
 * QEMU does not compute a layout: qcow2_co_create writes a header, a one-cluster refcount table at
 * cluster 1 and an empty refcount block at cluster 2, allocates clusters 0-2, then grows the
 * image with its ordinary allocator (first-fit from a moving free-cluster index; refcount blocks
 * made on demand, self-describing when possible; the refcount table regrown 1.5x at the end of
 * the image when full; allocations retried when a new refcount block lands in their way). The
 * quirks of that allocator show in the result, e.g. for 512-byte clusters the second refcount
 * block sits after the first data cluster it has to cover, so the model replays the same
 * allocation sequence over a set of the clusters in use. It also follows QEMU's writes, to
 * know the length of the file QEMU leaves.
 */

import { VdiskError } from '../../../block/errors.js';
import {
  INT_MAX,
  L1E_SIZE,
  MAX_L1_SIZE_BYTES,
  MAX_REFTABLE_SIZE_BYTES,
  REFTABLE_ENTRY_SIZE,
} from '../codec/constants.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import { selfCoveringRefcountArea } from '../codec/refcount-area.js';
import { ClusterSet } from './cluster-set.js';

export interface ByteRange {
  offset: number;
  length: number;
}

export interface DataRun {
  guestOffset: number;
  hostOffset: number;
  /** A multiple of the cluster size. */
  length: number;
}

const EAGAIN = 1;
/** QEMU's BDRV_REQUEST_MAX_BYTES. */
const REQUEST_MAX_BYTES = 0x7ffffe00;

/**
 * QEMU's qcow2_refcount_metadata_size: the refcount blocks (and table clusters) needed to count
 * `clusters` clusters from cluster 0 and themselves. With `generousIncrease`, room is added for
 * the table to grow by half once more, as QEMU does for a table that is not sized exactly.
 */
export function refcountMetadataBlocks(
  clusters: number,
  clusterSize: number,
  refcountOrder: number,
  generousIncrease: boolean,
): { blocks: number; tableClusters: number } {
  const blocksPerTableCluster = clusterSize / REFTABLE_ENTRY_SIZE;
  const area = (others: number) =>
    selfCoveringRefcountArea({
      start: 0,
      others,
      refcountsPerBlock: (clusterSize * 8) / 2 ** refcountOrder,
      // Counting from cluster 0 as if no block existed yet, as QEMU does.
      tableClusters: (blocks) => Math.ceil(blocks / blocksPerTableCluster),
    });
  let found = area(clusters);
  if (generousIncrease) found = area(clusters + Math.ceil(found.tableClusters / 2));
  return { blocks: found.blocks, tableClusters: found.tableClusters };
}

/** Replays QEMU's allocator on a model of the refcounts (see the module comment). */
export class QemuAllocatorModel {
  readonly g: Qcow2Geometry;
  readonly cs: number;
  readonly used = new ClusterSet();
  reftable: number[] = [];
  reftableSize: number;
  reftableOffset: number;
  maxReftableIndex = 0;
  freeClusterIndex = 0;
  fileEnd = 0;
  l1Offset = 0;
  l1Size = 0;
  readonly l1 = new Map<number, number>();
  readonly dataRuns: DataRun[] = [];
  readonly stale: { offset: number; entries: number[] }[] = [];
  readonly zeroed: ByteRange[] = [];

  constructor(g: Qcow2Geometry) {
    this.g = g;
    this.cs = g.clusterSize;
    // qcow2_co_create: header at 0, a one-cluster refcount table at cluster 1 pointing at an
    // empty refcount block at cluster 2, written as one 2-cluster write.
    this.reftableSize = g.tableEntriesPerCluster;
    this.reftableOffset = this.cs;
    this.reftable[0] = 2 * this.cs;
    this.write(0, 3 * this.cs);
  }

  write(offset: number, length: number): void {
    this.fileEnd = Math.max(this.fileEnd, offset + length);
  }

  /** alloc_clusters_noref: first fit of n free clusters from the free-cluster index. */
  allocNoref(n: number): number {
    let s = this.freeClusterIndex;
    for (;;) {
      const u = this.used.firstUsed(s, s + n);
      if (u === -1) break;
      s = this.used.runEnd(u);
    }
    this.freeClusterIndex = s + n;
    return s;
  }

  /** update_refcount over clusters [start, start + n): 0, or EAGAIN after undoing its work. */
  update(start: number, n: number, decrease: boolean): number {
    const end = start + n;
    let c = start;
    while (c < end) {
      const ti = Math.floor(c / this.g.refcountBlockEntries);
      if (this.allocRefcountBlock(c) === EAGAIN) {
        if (this.freeClusterIndex > start) this.freeClusterIndex = start;
        this.update(start, c - start, !decrease);
        return EAGAIN;
      }
      const segEnd = Math.min(end, (ti + 1) * this.g.refcountBlockEntries);
      if (decrease) {
        this.used.remove(c, segEnd);
        if (c < this.freeClusterIndex) this.freeClusterIndex = c;
      } else {
        this.used.add(c, segEnd);
      }
      c = segEnd;
    }
    return 0;
  }

  /** alloc_refcount_block: 0 if cluster c has a refcount block, else makes one and says EAGAIN. */
  allocRefcountBlock(c: number): number {
    const ti = Math.floor(c / this.g.refcountBlockEntries);
    if (ti < this.reftableSize && this.reftable[ti]) return 0;
    const nb = this.allocNoref(1);
    if (Math.floor(nb / this.g.refcountBlockEntries) === ti) {
      this.used.add(nb, nb + 1);
    } else if (this.update(nb, 1, false) === EAGAIN) {
      return EAGAIN;
    }
    this.write(nb * this.cs, this.cs);
    if (ti < this.reftableSize) {
      this.reftable[ti] = nb * this.cs;
      this.maxReftableIndex = Math.max(this.maxReftableIndex, ti);
      return EAGAIN;
    }
    const blocksUsed = Math.ceil(Math.max(c + 1, nb + 1) / this.g.refcountBlockEntries);
    this.refcountArea(blocksUsed * this.g.refcountBlockEntries * this.cs, 0, false, ti, nb * this.cs);
    return EAGAIN;
  }

  /** qcow2_refcount_area: new self-covering refcount table and blocks at startOffset. */
  refcountArea(startOffset: number, additional: number, exact: boolean, newIndex: number, newOffset: number): number {
    const cs = this.cs;
    const startCluster = startOffset / cs;
    const { blocks: total } = refcountMetadataBlocks(startCluster + additional, cs, this.g.refcountOrder, !exact);
    if (total > MAX_REFTABLE_SIZE_BYTES) throw tooLarge();
    const areaIndex = Math.floor(startCluster / this.g.refcountBlockEntries);
    const entriesPerCluster = this.g.tableEntriesPerCluster;
    let tableSize = exact ? total : total + Math.ceil(total / 2);
    tableSize = Math.ceil(tableSize / entriesPerCluster) * entriesPerCluster;
    const tableClusters = tableSize / entriesPerCluster;
    if (tableSize > MAX_REFTABLE_SIZE_BYTES) throw tooLarge();
    const keep = tableSize > this.maxReftableIndex ? this.maxReftableIndex + 1 : tableSize;
    const table = this.reftable.slice(0, keep);
    if (newOffset) table[newIndex] = newOffset;
    let missing = 0;
    for (let i = areaIndex; i < total; i++) if (!table[i]) missing++;
    const tableOffset = startOffset + missing * cs;
    const endOffset = tableOffset + tableClusters * cs;
    let blockOffset = startOffset;
    for (let i = areaIndex; i < total; i++) {
      if (!table[i]) {
        table[i] = blockOffset;
        blockOffset += cs;
      }
      this.write(table[i]!, cs);
      const first = i * this.g.refcountBlockEntries;
      const firstOffset = first * cs;
      if (firstOffset < endOffset) {
        const j = firstOffset < startOffset ? (startOffset - firstOffset) / cs : 0;
        const endIndex = Math.min((endOffset - firstOffset) / cs, this.g.refcountBlockEntries);
        this.used.add(first + j, first + endIndex);
      }
    }
    this.write(tableOffset, tableSize * REFTABLE_ENTRY_SIZE);
    const oldOffset = this.reftableOffset;
    const oldSize = this.reftableSize;
    const oldEntries: number[] = [];
    for (let i = 0; i < oldSize; i++) oldEntries.push(this.reftable[i] ?? 0);
    this.stale.push({ offset: oldOffset, entries: oldEntries });
    this.reftable = table;
    this.reftableSize = tableSize;
    this.reftableOffset = tableOffset;
    let max = tableSize - 1;
    while (max > 0 && !table[max]) max--;
    this.maxReftableIndex = max;
    this.update(oldOffset / cs, Math.ceil((oldSize * REFTABLE_ENTRY_SIZE) / cs), true);
    return endOffset;
  }

  /** qcow2_alloc_clusters: returns the first cluster index. */
  allocClusters(bytes: number): number {
    const n = Math.ceil(bytes / this.cs);
    for (;;) {
      const s = this.allocNoref(n);
      if (this.update(s, n, false) !== EAGAIN) return s;
    }
  }

  /** qcow2_alloc_clusters_at: allocates up to n free clusters from c; returns how many. */
  allocClustersAt(c: number, n: number): number {
    if (n === 0) return 0;
    for (;;) {
      const u = this.used.firstUsed(c, c + n);
      const free = u === -1 ? n : u - c;
      if (this.update(c, free, false) !== EAGAIN) return free;
    }
  }

  /** qcow2_grow_l1_table with exact size, from an empty L1. */
  growL1(entries: number): void {
    if (entries <= this.l1Size) return;
    if (entries > Math.floor(INT_MAX / L1E_SIZE) || entries > MAX_L1_SIZE_BYTES / L1E_SIZE) {
      throw new VdiskError(
        'EINVAL',
        "The image size is too large for file format 'qcow2' (try using a larger cluster size)",
      );
    }
    const bytes = entries * L1E_SIZE;
    const c = this.allocClusters(bytes);
    this.write(c * this.cs, bytes);
    this.l1Offset = c * this.cs;
    this.l1Size = entries;
  }

  /** get_cluster_table: makes the L2 table of the guest offset if it has none. */
  l2Table(guestOffset: number): void {
    const l1Index = Math.floor(guestOffset / this.g.l2Coverage);
    if (this.l1.has(l1Index)) return;
    const c = this.allocClusters(this.cs);
    this.write(c * this.cs, this.cs);
    this.l1.set(l1Index, c * this.cs);
    this.write(this.l1Offset + l1Index * L1E_SIZE, L1E_SIZE);
  }

  /** Clusters from guestOffset to the end of its L2 table (slices are whole tables). */
  clustersToTableEnd(guestOffset: number): number {
    return this.g.l2Entries - (Math.floor(guestOffset / this.cs) % this.g.l2Entries);
  }

  mapData(guestOffset: number, hostCluster: number, clusters: number): void {
    const last = this.dataRuns[this.dataRuns.length - 1];
    const hostOffset = hostCluster * this.cs;
    const length = clusters * this.cs;
    if (last && last.guestOffset + last.length === guestOffset && last.hostOffset + last.length === hostOffset) {
      last.length += length;
    } else {
      this.dataRuns.push({ guestOffset, hostOffset, length });
    }
  }

  /** qcow2_alloc_host_offset for a fresh range plus linking its L2 entries; returns bytes handled. */
  allocHostOffset(guestOffset: number, bytes: number): { host: number; bytes: number } {
    let start = guestOffset;
    let remaining = bytes;
    let clusterOffset = -1;
    let host = -1;
    let cur = 0;
    for (;;) {
      if (host === -1 && clusterOffset !== -1) host = clusterOffset;
      start += cur;
      remaining -= cur;
      if (clusterOffset !== -1) clusterOffset += cur;
      if (remaining === 0) break;
      cur = remaining;
      this.l2Table(start); // handle_copied: nothing allocated yet, but it makes the L2 table
      const inCluster = start % this.cs;
      let n = Math.ceil((inCluster + cur) / this.cs);
      n = Math.min(n, this.clustersToTableEnd(start), Math.floor(REQUEST_MAX_BYTES / this.cs));
      let c: number;
      if (clusterOffset === -1) {
        c = this.allocClusters(n * this.cs);
      } else {
        c = Math.floor(clusterOffset / this.cs);
        n = this.allocClustersAt(c, n);
        if (n === 0) break; // cannot extend the contiguous allocation
      }
      clusterOffset = c * this.cs + inCluster;
      cur = Math.min(cur, n * this.cs - inCluster);
      this.mapData(start - inCluster, c, n);
      // The COW of a partial last (sub)cluster writes zeros up to its end.
      const hostEnd = c * this.cs + inCluster + cur;
      const tail = hostEnd % this.g.subclusterSize;
      if (tail !== 0) {
        this.write(hostEnd, this.g.subclusterSize - tail);
        this.zeroed.push({ offset: hostEnd, length: this.g.subclusterSize - tail });
      }
    }
    if (host === -1) throw new Error('internal: no progress in preallocation');
    return { host, bytes: bytes - remaining };
  }

  /** preallocate_co for [offset, end). */
  preallocateMetadata(offset: number, end: number): void {
    let bytes = end - offset;
    let host = 0;
    let cur = 0;
    const chunk = Math.floor(INT_MAX / this.cs) * this.cs;
    while (bytes > 0) {
      cur = Math.min(bytes, chunk);
      const r = this.allocHostOffset(offset, cur);
      host = r.host;
      cur = r.bytes;
      bytes -= cur;
      offset += cur;
    }
    if (host + cur > this.fileEnd) this.fileEnd = host + cur;
  }

  /** The falloc/full branch of qcow2_co_truncate, from an empty image. */
  preallocateData(size: number): ByteRange {
    const cs = this.cs;
    const last = this.used.lastBelow(Math.ceil(this.fileEnd / cs));
    const oldFileSize = last >= 0 ? (last + 1) * cs : Math.ceil(this.fileEnd / cs) * cs;
    let dataClusters = Math.ceil(size / cs);
    const l2Tables = Math.ceil(dataClusters / (cs / this.g.l2EntrySize)) + 1;
    const allocationStart = this.refcountArea(oldFileSize, dataClusters + l2Tables, true, 0, 0);
    const got = this.allocClustersAt(allocationStart / cs, dataClusters);
    if (got !== dataClusters) throw new Error('internal: preallocation area not free');
    const newFileSize = allocationStart + dataClusters * cs;
    const area = { offset: this.fileEnd, length: Math.max(0, newFileSize - this.fileEnd) };
    this.fileEnd = newFileSize;
    let guest = 0;
    let hostCluster = allocationStart / cs;
    while (dataClusters > 0) {
      const n = Math.min(dataClusters, this.clustersToTableEnd(guest));
      this.l2Table(guest);
      this.mapData(guest, hostCluster, n);
      guest += n * cs;
      hostCluster += n;
      dataClusters -= n;
    }
    return area;
  }
}

function tooLarge(): VdiskError {
  return new VdiskError('EINVAL', 'Could not resize image: the refcount table would be too large');
}
