/**
 * Numbers derived from a QCOW2 header: cluster and subcluster sizes, entries per table, where a
 * guest offset lands in the L1/L2 tables and a host offset in the refcount structures.
 * Pure arithmetic; values above 2^31 use division, never 32-bit shifts.
 */

import { VdiskError } from '../../../block/errors.js';
import {
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  L1E_SIZE,
  L2E_SIZE_EXTENDED,
  L2E_SIZE_NORMAL,
  MAX_CLUSTER_BITS,
  MAX_REFCOUNT_ORDER,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTL2,
  REFTABLE_ENTRY_SIZE,
  SUBCLUSTERS_PER_CLUSTER,
} from './constants.js';

/** What the entry codecs need to know about an image. */
export interface EntryFormat {
  readonly version: number;
  readonly clusterBits: number;
  readonly extendedL2: boolean;
  /** With an external data file, an L2 entry with offset 0 and COPIED maps host offset 0. */
  readonly externalDataFile: boolean;
}

export interface Qcow2Geometry extends EntryFormat {
  readonly clusterSize: number;
  /** Bytes of one L2 entry: 8, or 16 with extended L2 entries. */
  readonly l2EntrySize: number;
  /** log2 of the entries in one L2 table. */
  readonly l2Bits: number;
  readonly l2Entries: number;
  /** Guest bytes one L2 table maps (clusterSize * l2Entries). */
  readonly l2Coverage: number;
  readonly subclustersPerCluster: number;
  readonly subclusterBits: number;
  readonly subclusterSize: number;
  readonly refcountOrder: number;
  readonly refcountBits: number;
  /** log2 of the refcounts in one refcount block. */
  readonly refcountBlockBits: number;
  readonly refcountBlockEntries: number;
  /** Host bytes one refcount block covers. */
  readonly refcountBlockCoverage: number;
  /** Entries in one cluster of the refcount table (and of the L1 table). */
  readonly tableEntriesPerCluster: number;
}

export interface GeometryInput {
  version: number;
  clusterBits: number;
  refcountOrder: number;
  extendedL2?: boolean;
  externalDataFile?: boolean;
}

/** Builds the derived numbers; throws EINVAL for combinations the format does not allow. */
export function makeGeometry(input: GeometryInput): Qcow2Geometry {
  const { version, clusterBits, refcountOrder } = input;
  const extendedL2 = input.extendedL2 ?? false;
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new VdiskError('EINVAL', `Unsupported cluster size: 2^${clusterBits}`);
  }
  if (!Number.isInteger(refcountOrder) || refcountOrder < 0 || refcountOrder > MAX_REFCOUNT_ORDER) {
    throw new VdiskError('EINVAL', `Unsupported refcount order ${refcountOrder}`);
  }
  if (extendedL2 && clusterBits < MIN_CLUSTER_BITS_EXTL2) {
    throw new VdiskError('EINVAL', `Unsupported subcluster size: ${(1 << clusterBits) / SUBCLUSTERS_PER_CLUSTER}`);
  }
  const clusterSize = 2 ** clusterBits;
  const l2EntrySize = extendedL2 ? L2E_SIZE_EXTENDED : L2E_SIZE_NORMAL;
  const l2Bits = clusterBits - (extendedL2 ? 4 : 3);
  const subclustersPerCluster = extendedL2 ? SUBCLUSTERS_PER_CLUSTER : 1;
  const subclusterBits = clusterBits - (extendedL2 ? 5 : 0);
  const refcountBlockBits = clusterBits + 3 - refcountOrder;
  return {
    version,
    clusterBits,
    extendedL2,
    externalDataFile: input.externalDataFile ?? false,
    clusterSize,
    l2EntrySize,
    l2Bits,
    l2Entries: 2 ** l2Bits,
    l2Coverage: 2 ** (clusterBits + l2Bits),
    subclustersPerCluster,
    subclusterBits,
    subclusterSize: 2 ** subclusterBits,
    refcountOrder,
    refcountBits: 2 ** refcountOrder,
    refcountBlockBits,
    refcountBlockEntries: 2 ** refcountBlockBits,
    refcountBlockCoverage: 2 ** (refcountBlockBits + clusterBits),
    tableEntriesPerCluster: clusterSize / REFTABLE_ENTRY_SIZE,
  };
}

/** The geometry of a decoded header. */
export function geometryOf(h: {
  version: number;
  clusterBits: number;
  refcountOrder: number;
  incompatibleFeatures: number;
}): Qcow2Geometry {
  return makeGeometry({
    version: h.version,
    clusterBits: h.clusterBits,
    refcountOrder: h.refcountOrder,
    extendedL2: (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0,
    externalDataFile: (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0,
  });
}

/** Offset within its cluster. */
export function offsetInCluster(g: Qcow2Geometry, offset: number): number {
  return offset % g.clusterSize;
}

/** Start of the cluster that holds `offset`. */
export function startOfCluster(g: Qcow2Geometry, offset: number): number {
  return offset - (offset % g.clusterSize);
}

/** Clusters needed to hold `bytes` (rounded up). */
export function sizeToClusters(g: Qcow2Geometry, bytes: number): number {
  return Math.ceil(bytes / g.clusterSize);
}

/** Index of the cluster that holds `offset`. */
export function clusterIndex(g: Qcow2Geometry, offset: number): number {
  return Math.floor(offset / g.clusterSize);
}

/** The L1 index of a guest offset. */
export function l1Index(g: Qcow2Geometry, guestOffset: number): number {
  return Math.floor(guestOffset / g.l2Coverage);
}

/** The L2 index of a guest offset within its table. */
export function l2Index(g: Qcow2Geometry, guestOffset: number): number {
  return Math.floor(guestOffset / g.clusterSize) % g.l2Entries;
}

/** The subcluster index (0-31 with extended L2, else 0) of a guest offset within its cluster. */
export function subclusterIndex(g: Qcow2Geometry, guestOffset: number): number {
  return Math.floor((guestOffset % g.clusterSize) / g.subclusterSize);
}

/** L1 entries needed for a virtual size (QEMU's size_to_l1). */
export function l1EntriesFor(g: Qcow2Geometry, virtualSize: number): number {
  return Math.ceil(virtualSize / g.l2Coverage);
}

/** Bytes of an L1 table with `entries` entries. */
export function l1TableBytes(entries: number): number {
  return entries * L1E_SIZE;
}

/** The refcount table index of a host offset. */
export function refcountTableIndex(g: Qcow2Geometry, hostOffset: number): number {
  return Math.floor(hostOffset / g.refcountBlockCoverage);
}

/** The index of a host offset's refcount within its refcount block. */
export function refcountBlockIndex(g: Qcow2Geometry, hostOffset: number): number {
  return Math.floor(hostOffset / g.clusterSize) % g.refcountBlockEntries;
}

/** Byte offset of L2 entry `index` within its table. */
export function l2EntryOffset(g: Qcow2Geometry, index: number): number {
  return index * g.l2EntrySize;
}
