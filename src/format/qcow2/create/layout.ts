/**
 * Where `qemu-img create -f qcow2` (QEMU 7.2) puts every structure of a new image, computed
 * without I/O so that vdisk can write the same file. The allocation sequence is QEMU's, replayed
 * on a model (qemu-allocator.ts):
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
  SECTOR_SIZE,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
} from '../codec/constants.js';
import { makeGeometry, type Qcow2Geometry } from '../codec/geometry.js';
import type { Qcow2Header } from '../codec/header.js';
import { type ByteRange, type DataRun, QemuAllocatorModel } from './qemu-allocator.js';

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

/** Validates the options as qcow2_co_create does and fills in QEMU's defaults. */
export function normalize(opts: CreateLayoutOptions): Required<CreateLayoutOptions> {
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
  const sim = new QemuAllocatorModel(g);
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
