/**
 * Where `qemu-img create -f qcow2` (QEMU 7.2) puts every structure of a new image, computed
 * without I/O so that vdisk can write the same file.
 *
 * QEMU does not compute a layout: qcow2_co_create writes a header, a one-cluster refcount table at
 * cluster 1 and an empty refcount block at cluster 2, allocates clusters 0-2, then grows the
 * image with its ordinary allocator (first-fit from a moving free-cluster index; refcount blocks
 * made on demand, self-describing when possible; the refcount table regrown 1.5x at the end of
 * the image when full; allocations retried when a new refcount block lands in their way). The
 * quirks of that allocator show in the result, e.g. for 512-byte clusters the second refcount
 * block sits after the first data cluster it has to cover. So this module replays the same
 * allocation sequence over a model of the refcounts:
 *
 *   off       L1 table at the first free cluster (3 unless the L1 needs more refcount blocks)
 *   metadata  then, for each L2 table: the table, then its data clusters (contiguous)
 *   falloc    new self-covering refcount structures at the end (qcow2_refcount_area), the data
 *   full      area after them, then the L2 tables, first-fit (the first one in the freed cluster 1)
 *
 * The file length follows QEMU's writes: table writes of exactly their size (an L1 of one entry
 * ends the file 8 bytes into its cluster: 196,616 bytes for 64 MiB with 64 KiB clusters), whole
 * clusters for refcount blocks and L2 tables, and for metadata preallocation the zeroed tail of a
 * partial last cluster (or subcluster).
 */

import { VdiskError } from '../../../block/errors.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZLIB,
  COMPRESSION_ZSTD,
  INCOMPAT_COMPRESSION,
  INCOMPAT_EXTL2,
  INT_MAX,
  L1E_SIZE,
  MAX_L1_SIZE_BYTES,
  MAX_REFTABLE_SIZE_BYTES,
  REFTABLE_ENTRY_SIZE,
  SECTOR_SIZE,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
} from '../codec/constants.js';
import { makeGeometry, type Qcow2Geometry } from '../codec/geometry.js';
import type { Qcow2Header } from '../codec/header.js';
import { ClusterSet } from './cluster-set.js';

export type CreatePreallocation = 'off' | 'metadata' | 'falloc' | 'full';

export interface CreateLayoutOptions {
  /** Virtual size in bytes, a multiple of 512. */
  size: number;
  clusterBits?: number;
  refcountOrder?: number;
  version?: 2 | 3;
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  compressionType?: number;
  preallocation?: CreatePreallocation;
  /** The image will get a backing file (only validated: it does not change the layout). */
  hasBackingFile?: boolean;
}

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

export interface CreateLayout {
  geometry: Qcow2Geometry;
  /** The header fields (backing file offset/size 0; encodeHeaderCluster fills them). */
  header: Qcow2Header;
  /** Refcount-table entries, index -> refcount block offset (0 = none); refcountTableClusters long. */
  refcountTable: number[];
  /** Byte ranges of the clusters whose refcount is 1 (every other cluster has refcount 0). */
  allocated: ByteRange[];
  /** L1 index -> L2 table offset, for preallocated images (entries carry COPIED). */
  l2Tables: { l1Index: number; offset: number }[];
  /** Guest ranges mapped to host clusters (L2 entries with COPIED; extended L2 bitmaps stay 0). */
  dataRuns: DataRun[];
  /** For falloc/full: the data area QEMU preallocates (fallocate or zero writes). */
  preallocatedData?: ByteRange;
  /**
   * Refcount tables QEMU replaced and freed, with the entries they held: their bytes stay in the
   * file wherever nothing was written over them later. Write these first, then everything else.
   */
  staleRefcountTables: { offset: number; entries: number[] }[];
  /** Zeros QEMU writes to finish a partial last (sub)cluster of a preallocated image. */
  zeroedRanges: ByteRange[];
  /** The length of the file QEMU leaves. */
  fileLength: number;
}

const EAGAIN = 1;
/** QEMU's BDRV_REQUEST_MAX_BYTES. */
const REQUEST_MAX_BYTES = 0x7ffffe00;

/** QEMU's qcow2_refcount_metadata_size: refcount blocks needed to cover `clusters` and themselves. */
export function refcountMetadataBlocks(
  clusters: number,
  clusterSize: number,
  refcountOrder: number,
  generousIncrease: boolean,
): { blocks: number; tableClusters: number } {
  const blocksPerTableCluster = clusterSize / REFTABLE_ENTRY_SIZE;
  const refcountsPerBlock = (clusterSize * 8) / 2 ** refcountOrder;
  let table = 0;
  let blocks = 0;
  let last: number;
  let n = 0;
  let generous = generousIncrease;
  let covered = clusters;
  do {
    last = n;
    blocks = Math.ceil((covered + table + blocks) / refcountsPerBlock);
    table = Math.ceil(blocks / blocksPerTableCluster);
    n = covered + blocks + table;
    if (n === last && generous) {
      covered += Math.ceil(table / 2);
      n = 0;
      generous = false;
    }
  } while (n !== last);
  return { blocks, tableClusters: table };
}

/** Replays QEMU's allocator (block/qcow2-refcount.c, qcow2-cluster.c) on a model. */
class Simulator {
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

/** Validates the options as qcow2_co_create does and fills in QEMU's defaults. */
function normalize(opts: CreateLayoutOptions): Required<CreateLayoutOptions> {
  const version = opts.version ?? 3;
  const clusterBits = opts.clusterBits ?? 16;
  const refcountOrder = opts.refcountOrder ?? 4;
  const extendedL2 = opts.extendedL2 ?? false;
  const lazyRefcounts = opts.lazyRefcounts ?? false;
  const compressionType = opts.compressionType ?? COMPRESSION_ZLIB;
  const preallocation = opts.preallocation ?? 'off';
  const hasBackingFile = opts.hasBackingFile ?? false;
  const { size } = opts;
  if (!Number.isSafeInteger(size) || size < 0 || size % SECTOR_SIZE !== 0) {
    throw new VdiskError('EINVAL', `Image size must be a multiple of ${SECTOR_SIZE} bytes`);
  }
  if (version !== 2 && version !== 3) throw new VdiskError('EINVAL', `Invalid qcow2 version ${version}`);
  if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 21) {
    throw new VdiskError('EINVAL', 'Cluster size must be a power of two between 512 and 2048k');
  }
  if (extendedL2 && clusterBits < 14) {
    throw new VdiskError('EINVAL', 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  }
  if (!Number.isInteger(refcountOrder) || refcountOrder < 0 || refcountOrder > 6) {
    throw new VdiskError('EINVAL', 'Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (extendedL2 && version < 3) {
    throw new VdiskError('EINVAL', 'Extended L2 entries are only supported with compatibility level 1.1 and above');
  }
  if (lazyRefcounts && version < 3) {
    throw new VdiskError('EINVAL', 'Lazy refcounts only supported with compatibility level 1.1 and above');
  }
  if (refcountOrder !== 4 && version < 3) {
    throw new VdiskError('EINVAL', 'Different refcount widths than 16 bits require compatibility level 1.1 or above');
  }
  if (compressionType !== COMPRESSION_ZLIB && version < 3) {
    throw new VdiskError(
      'EINVAL',
      'Non-zlib compression type is only supported with compatibility level 1.1 and above',
    );
  }
  if (compressionType !== COMPRESSION_ZLIB && compressionType !== COMPRESSION_ZSTD) {
    throw new VdiskError('EINVAL', 'Unknown compression type');
  }
  if (hasBackingFile && preallocation !== 'off' && !extendedL2) {
    throw new VdiskError(
      'EINVAL',
      'Backing file and preallocation can only be used at the same time if extended_l2 is on',
    );
  }
  return {
    size,
    version,
    clusterBits,
    refcountOrder,
    extendedL2,
    lazyRefcounts,
    compressionType,
    preallocation,
    hasBackingFile,
  };
}

/** Computes the layout of a new image exactly as qemu-img create 7.2 would make it. */
export function planCreateLayout(options: CreateLayoutOptions): CreateLayout {
  const o = normalize(options);
  const g = makeGeometry({
    version: o.version,
    clusterBits: o.clusterBits,
    refcountOrder: o.refcountOrder,
    extendedL2: o.extendedL2,
  });
  const sim = new Simulator(g);
  if (sim.allocClusters(3 * g.clusterSize) !== 0) throw new Error('internal: first clusters not free');
  sim.growL1(Math.ceil(o.size / g.l2Coverage));
  let preallocatedData: ByteRange | undefined;
  if (o.preallocation === 'metadata') sim.preallocateMetadata(0, o.size);
  else if (o.preallocation === 'falloc' || o.preallocation === 'full') preallocatedData = sim.preallocateData(o.size);

  const allocated: ByteRange[] = sim.used.starts.map((s, i) => ({
    offset: s * g.clusterSize,
    length: (sim.used.ends[i]! - s) * g.clusterSize,
  }));
  const refcountTable: number[] = [];
  for (let i = 0; i < sim.reftableSize; i++) refcountTable.push(sim.reftable[i] ?? 0);
  const header: Qcow2Header = {
    version: o.version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: o.clusterBits,
    size: o.size,
    cryptMethod: 0,
    l1Size: sim.l1Size,
    l1TableOffset: sim.l1Offset,
    refcountTableOffset: sim.reftableOffset,
    refcountTableClusters: sim.reftableSize / g.tableEntriesPerCluster,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures:
      (o.extendedL2 ? INCOMPAT_EXTL2 : 0) | (o.compressionType !== COMPRESSION_ZLIB ? INCOMPAT_COMPRESSION : 0),
    compatibleFeatures: o.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0,
    autoclearFeatures: 0,
    refcountOrder: o.refcountOrder,
    headerLength: o.version === 2 ? V2_HEADER_LENGTH : V3_HEADER_LENGTH,
    compressionType: o.compressionType,
    unknownFields: Buffer.alloc(0),
  };
  const layout: CreateLayout = {
    geometry: g,
    header,
    refcountTable,
    allocated,
    l2Tables: [...sim.l1.entries()]
      .map(([l1Index, offset]) => ({ l1Index, offset }))
      .sort((a, b) => a.l1Index - b.l1Index),
    dataRuns: sim.dataRuns,
    staleRefcountTables: sim.stale,
    zeroedRanges: sim.zeroed,
    fileLength: sim.fileEnd,
  };
  if (preallocatedData) layout.preallocatedData = preallocatedData;
  return layout;
}
