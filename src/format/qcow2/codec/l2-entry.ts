/**
 * L2 table entries, standard (8 bytes) and extended (16 bytes: the entry plus a subcluster
 * bitmap), decoded into one union:
 *
 *   unallocated  read from the backing file, or zeros       (extended: some subclusters may read as zero)
 *   zero         reads as zeros; `host` may name a preallocated cluster (standard entries, v3)
 *   data         a host cluster; extended entries say which subclusters are allocated / zero
 *   compressed   a compressed cluster: byte offset, 512-byte sectors, usable length
 *
 * Bit layout (docs/interop/qcow2.txt): bit 63 COPIED, bit 62 compressed. Standard descriptor:
 * bit 0 ZERO, bits 1-8 reserved, bits 9-55 host offset, bits 56-61 reserved. Compressed
 * descriptor with x = 62 - (cluster_bits - 8): bits 0..x-1 host byte offset, bits x..61 the number
 * of additional sectors. Extended bitmap: bits 0-31 allocated, bits 32-63 reads-as-zero.
 *
 * Like QEMU, bit 0 of a standard entry means ZERO whatever the version; vdisk never writes it to
 * a v2 image.
 */

import { VdiskError } from '../../../block/errors.js';
import { hex, hex64, splitU64 } from '../../../util/u64.js';
import { SECTOR_SIZE } from './constants.js';
import type { EntryFormat } from './geometry.js';

export interface SubclusterBitmap {
  /** Bit i set: subcluster i is allocated (u32). */
  alloc: number;
  /** Bit i set: subcluster i reads as zeros (u32). */
  zero: number;
}

export type L2Entry =
  | { kind: 'unallocated'; sub?: SubclusterBitmap }
  | { kind: 'zero'; host: number; copied: boolean }
  | { kind: 'data'; host: number; copied: boolean; sub?: SubclusterBitmap }
  | { kind: 'compressed'; host: number; sectors: number; length: number };

/** What one subcluster (or the whole cluster, without extended L2) reads from. */
export type SubclusterKind = 'unallocated' | 'zero' | 'data' | 'compressed';

const COPIED_HIGH = 0x80000000;
const COMPRESSED_HIGH = 0x40000000;
const ZERO_LOW = 0x1;
/** Standard descriptor reserved bits: 56-61 (high word), 1-8 (low word; bit 0 too with extended L2). */
const STD_RESERVED_HIGH = 0x3f000000;
const STD_RESERVED_LOW = 0x1fe;
const EXT_RESERVED_LOW = 0x1ff;
const OFFSET_HIGH = 0xffffff;
const OFFSET_HIGH_SAFE = 0x1fffff;
const ALL_SUBCLUSTERS = 0xffffffff;

function corrupt(message: string, index: number): VdiskError {
  return new VdiskError('ECORRUPT', `${message} (L2 index: ${hex(index)})`);
}

/** Decodes entry `index` of an L2 table (or slice) buffer. */
export function decodeL2(table: Buffer, index: number, g: EntryFormat): L2Entry {
  const off = index * (g.extendedL2 ? 16 : 8);
  const high = table.readUInt32BE(off);
  const low = table.readUInt32BE(off + 4);
  if (!g.extendedL2) return decodeStandard(high, low, index, g);
  const zero = table.readUInt32BE(off + 8);
  const alloc = table.readUInt32BE(off + 12);
  return decodeExtended(high, low, alloc, zero, index, g);
}

function decodeStandard(high: number, low: number, index: number, g: EntryFormat): L2Entry {
  if ((high & COMPRESSED_HIGH) !== 0) return decodeCompressed(high, low, index, g);
  if ((high & STD_RESERVED_HIGH) !== 0 || (low & STD_RESERVED_LOW) !== 0) {
    throw corrupt(`L2 entry ${hex64(high, low)} has reserved bits set`, index);
  }
  const copied = (high & COPIED_HIGH) !== 0;
  const host = hostOffset(high, low, index, g);
  if ((low & ZERO_LOW) !== 0) return { kind: 'zero', host, copied };
  if (host === 0 && !(g.externalDataFile && copied)) return { kind: 'unallocated' };
  return { kind: 'data', host, copied };
}

function decodeExtended(
  high: number,
  low: number,
  alloc: number,
  zero: number,
  index: number,
  g: EntryFormat,
): L2Entry {
  if ((high & COMPRESSED_HIGH) !== 0) {
    if (alloc !== 0 || zero !== 0) throw corrupt('Compressed cluster has a non-zero subcluster bitmap', index);
    return decodeCompressed(high, low, index, g);
  }
  if ((high & STD_RESERVED_HIGH) !== 0 || (low & EXT_RESERVED_LOW) !== 0) {
    throw corrupt(`L2 entry ${hex64(high, low)} has reserved bits set`, index);
  }
  const copied = (high & COPIED_HIGH) !== 0;
  const host = hostOffset(high, low, index, g);
  if (host === 0 && !(g.externalDataFile && copied)) {
    if (alloc !== 0) throw corrupt('Invalid cluster entry: unallocated cluster with allocated subclusters', index);
    return { kind: 'unallocated', sub: { alloc: 0, zero } };
  }
  if ((alloc & zero) !== 0) {
    throw corrupt('Invalid cluster entry: subclusters both allocated and reading as zero', index);
  }
  return { kind: 'data', host, copied, sub: { alloc, zero } };
}

/** Bits 9-55 of a standard descriptor, checked for 2^53 and cluster alignment. */
function hostOffset(high: number, low: number, index: number, g: EntryFormat): number {
  const offHigh = high & OFFSET_HIGH;
  const offLow = (low & 0xfffffe00) >>> 0;
  if (offHigh > OFFSET_HIGH_SAFE) {
    throw new VdiskError(
      'EOVERFLOW',
      `Cluster offset ${hex64(offHigh, offLow)} is too large (2^53 or more is not supported; L2 index: ${hex(index)})`,
    );
  }
  const host = offHigh * 0x1_0000_0000 + offLow;
  if (host % 2 ** g.clusterBits !== 0) throw corrupt(`Cluster allocation offset ${hex(host)} unaligned`, index);
  return host;
}

function decodeCompressed(high: number, low: number, index: number, g: EntryFormat): L2Entry {
  if ((high & COPIED_HIGH) !== 0) throw corrupt('Compressed cluster has COPIED set', index);
  const x = 62 - (g.clusterBits - 8);
  // Offset bits 32..x-1 live in the high word; bits 56 and above must be zero.
  const offsetHighBits = Math.min(x, 56) - 32;
  const offHigh = high & (2 ** offsetHighBits - 1);
  if (x > 56 && ((high >>> 24) & (2 ** (x - 56) - 1)) !== 0) {
    throw corrupt('Compressed cluster offset is beyond 2^56', index);
  }
  if (offHigh > OFFSET_HIGH_SAFE) {
    throw new VdiskError(
      'EOVERFLOW',
      `Compressed cluster offset ${hex64(offHigh, low)} is too large (2^53 or more is not supported; L2 index: ${hex(index)})`,
    );
  }
  const host = offHigh * 0x1_0000_0000 + low;
  const sectors = ((high >>> (x - 32)) & (2 ** (g.clusterBits - 8) - 1)) + 1;
  return { kind: 'compressed', host, sectors, length: sectors * SECTOR_SIZE - (host % SECTOR_SIZE) };
}

/** Number of 512-byte sectors a compressed cluster of `bytes` bytes at `host` spans. */
export function compressedSectors(host: number, bytes: number): number {
  return Math.floor((host + bytes - 1) / SECTOR_SIZE) - Math.floor(host / SECTOR_SIZE) + 1;
}

/** Writes entry `index` of an L2 table buffer. Throws EINVAL for what the format cannot hold. */
export function encodeL2(table: Buffer, index: number, entry: L2Entry, g: EntryFormat): void {
  const off = index * (g.extendedL2 ? 16 : 8);
  let high: number;
  let low: number;
  let bitmap: SubclusterBitmap = { alloc: 0, zero: 0 };
  switch (entry.kind) {
    case 'unallocated':
      high = 0;
      low = 0;
      if (entry.sub) {
        if (!g.extendedL2) throw new VdiskError('EINVAL', 'Subcluster bitmaps need extended L2 entries');
        if (entry.sub.alloc !== 0)
          throw new VdiskError('EINVAL', 'An unallocated cluster has no allocated subclusters');
        bitmap = entry.sub;
      }
      break;
    case 'zero':
      if (g.extendedL2) throw new VdiskError('EINVAL', 'Extended L2 entries mark zeros in the subcluster bitmap');
      if (g.version < 3) throw new VdiskError('EINVAL', 'Zero clusters need qcow2 version 3 (compat=1.1)');
      [high, low] = standardWords(entry.host, entry.copied, g);
      low = (low | ZERO_LOW) >>> 0;
      break;
    case 'data':
      if (entry.host === 0 && !(g.externalDataFile && entry.copied)) {
        throw new VdiskError('EINVAL', 'A data cluster at host offset 0 needs an external data file and COPIED');
      }
      [high, low] = standardWords(entry.host, entry.copied, g);
      if (g.extendedL2) {
        bitmap = entry.sub ?? { alloc: ALL_SUBCLUSTERS, zero: 0 };
        if ((bitmap.alloc & bitmap.zero) !== 0) {
          throw new VdiskError('EINVAL', 'A subcluster cannot be both allocated and zero');
        }
      } else if (entry.sub) {
        throw new VdiskError('EINVAL', 'Subcluster bitmaps need extended L2 entries');
      }
      break;
    case 'compressed':
      [high, low] = compressedWords(entry.host, entry.sectors, g);
      break;
  }
  table.writeUInt32BE(high >>> 0, off);
  table.writeUInt32BE(low >>> 0, off + 4);
  if (g.extendedL2) {
    table.writeUInt32BE(bitmap.zero >>> 0, off + 8);
    table.writeUInt32BE(bitmap.alloc >>> 0, off + 12);
  }
}

function standardWords(host: number, copied: boolean, g: EntryFormat): [number, number] {
  if (host < 0 || host >= 2 ** 56 || host % 2 ** g.clusterBits !== 0) {
    throw new VdiskError('EINVAL', `Cluster offset ${hex(host)} cannot be stored in an L2 entry`);
  }
  const [high, low] = splitU64(host, 'cluster offset');
  return [(high | (copied ? COPIED_HIGH : 0)) >>> 0, low];
}

function compressedWords(host: number, sectors: number, g: EntryFormat): [number, number] {
  const x = 62 - (g.clusterBits - 8);
  const maxSectors = 2 ** (g.clusterBits - 8);
  if (!Number.isInteger(sectors) || sectors < 1 || sectors > maxSectors) {
    throw new VdiskError('EINVAL', `A compressed cluster spans 1 to ${maxSectors} sectors, not ${sectors}`);
  }
  if (host < 0 || host >= 2 ** Math.min(x, 56)) {
    throw new VdiskError('EINVAL', `Compressed cluster offset ${hex(host)} cannot be stored in an L2 entry`);
  }
  const [high, low] = splitU64(host, 'compressed cluster offset');
  return [(high | ((sectors - 1) << (x - 32)) | COMPRESSED_HIGH) >>> 0, low];
}

/** What subcluster `sc` (0 without extended L2) of a decoded entry reads from. */
export function subclusterKind(entry: L2Entry, sc: number): SubclusterKind {
  switch (entry.kind) {
    case 'compressed':
      return 'compressed';
    case 'zero':
      return 'zero';
    case 'unallocated':
      return entry.sub && (entry.sub.zero >>> sc) & 1 ? 'zero' : 'unallocated';
    case 'data':
      if (!entry.sub) return 'data';
      if ((entry.sub.zero >>> sc) & 1) return 'zero';
      return (entry.sub.alloc >>> sc) & 1 ? 'data' : 'unallocated';
  }
}
