/**
 * L1 table entries: bits 9-55 give the offset of an L2 table (0 = none), bit 63 (COPIED) says
 * its refcount is exactly one. Bits 0-8 and 56-62 are reserved.
 *
 * Codecs work on the table Buffer and an index, so the hot path allocates nothing but the
 * decoded object.
 */

import { VdiskError } from '../../../block/errors.js';
import { hex, hex64, splitU64 } from '../../../util/u64.js';
import { L1E_SIZE, MAX_HOST_OFFSET_EXCLUSIVE } from './constants.js';
import type { EntryFormat } from './geometry.js';

export interface L1Entry {
  /** Offset of the L2 table in the image file; 0 when the L1 entry is empty. */
  l2Offset: number;
  /** The L2 table's refcount is exactly one (only meaningful in the active L1 table). */
  copied: boolean;
}

const COPIED_HIGH = 0x80000000;
/** Reserved bits 56-62 in the high word, 0-8 in the low word. */
const RESERVED_HIGH = 0x7f000000;
const RESERVED_LOW = 0x1ff;
/** Bits 32-52 of the offset (bits 53-55 would need more than 2^53). */
const OFFSET_HIGH_SAFE = 0x1fffff;
const OFFSET_HIGH = 0xffffff;

/** Decodes L1 entry `index` of `table`. Throws ECORRUPT for reserved bits or unaligned offsets. */
export function decodeL1(table: Buffer, index: number, g: EntryFormat): L1Entry {
  const off = index * L1E_SIZE;
  const high = table.readUInt32BE(off);
  const low = table.readUInt32BE(off + 4);
  const copied = (high & COPIED_HIGH) !== 0;
  if ((high & RESERVED_HIGH) !== 0 || (low & RESERVED_LOW) !== 0) {
    throw new VdiskError(
      'ECORRUPT',
      `L1 entry ${hex64(high >>> 0, low)} has reserved bits set (L1 index: ${hex(index)})`,
    );
  }
  const offHigh = high & OFFSET_HIGH;
  if (offHigh > OFFSET_HIGH_SAFE) {
    throw new VdiskError(
      'EOVERFLOW',
      `L2 table offset ${hex64(offHigh, low)} is too large (2^53 or more is not supported; L1 index: ${hex(index)})`,
    );
  }
  const l2Offset = offHigh * 0x1_0000_0000 + low;
  if (l2Offset % 2 ** g.clusterBits !== 0) {
    throw new VdiskError('ECORRUPT', `L2 table offset ${hex(l2Offset)} unaligned (L1 index: ${hex(index)})`);
  }
  if (l2Offset === 0 && copied) {
    throw new VdiskError('ECORRUPT', `L1 entry has COPIED set but no L2 table (L1 index: ${hex(index)})`);
  }
  return { l2Offset, copied };
}

/**
 * The L2 table offset in L1 entry `index` (0 = none), decoded as decodeL1 does. Empty entries,
 * most of a big L1 table, are recognised without decoding (a 1 PiB image has 2M of them).
 */
export function l2OffsetAt(table: Buffer, index: number, g: EntryFormat): number {
  const off = index * L1E_SIZE;
  if (table.readUInt32BE(off) === 0 && table.readUInt32BE(off + 4) === 0) return 0;
  return decodeL1(table, index, g).l2Offset;
}

/** Writes L1 entry `index` of `table`. Throws EINVAL for an offset the format cannot hold. */
export function encodeL1(table: Buffer, index: number, entry: L1Entry, g: EntryFormat): void {
  const { l2Offset, copied } = entry;
  if (l2Offset % 2 ** g.clusterBits !== 0 || l2Offset < 0 || l2Offset >= MAX_HOST_OFFSET_EXCLUSIVE) {
    throw new VdiskError('EINVAL', `L2 table offset ${hex(l2Offset)} cannot be stored in an L1 entry`);
  }
  if (l2Offset === 0 && copied) {
    throw new VdiskError('EINVAL', 'An empty L1 entry cannot have COPIED set');
  }
  const [high, low] = splitU64(l2Offset, 'L2 table offset');
  const off = index * L1E_SIZE;
  table.writeUInt32BE((high | (copied ? COPIED_HIGH : 0)) >>> 0, off);
  table.writeUInt32BE(low, off + 4);
}

/** Number of entries in an L1 table buffer. */
export function l1EntryCount(table: Buffer): number {
  return Math.floor(table.length / L1E_SIZE);
}
