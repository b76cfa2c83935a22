/**
 * Refcount blocks and refcount-table entries.
 *
 * A refcount block is one cluster holding refcount_bits-wide entries (refcount_bits = 1 << order,
 * 1 to 64). Widths of 8 bits and more are big-endian integers; sub-byte widths pack several
 * entries into a byte with entry 0 in the least significant bits. A refcount-table entry holds
 * the offset of a refcount block in bits 9-63 (0 = not allocated); bits 0-8 are reserved.
 */

import { VdiskError } from '../../../block/errors.js';
import { hex, hex64, TWO_POW_32 } from '../../../util/u64.js';
import { MAX_REFCOUNT_ORDER, REFTABLE_ENTRY_SIZE } from './constants.js';

/** The largest refcount an entry of this order can hold (capped at 2^53 - 1 for order 6). */
export function maxRefcount(order: number): number {
  checkOrder(order);
  return order === 6 ? Number.MAX_SAFE_INTEGER : 2 ** (2 ** order) - 1;
}

/** Refcounts held by one refcount block of `clusterSize` bytes. */
export function refcountsPerBlock(clusterSize: number, order: number): number {
  checkOrder(order);
  return (clusterSize * 8) / 2 ** order;
}

function checkOrder(order: number): void {
  if (!Number.isInteger(order) || order < 0 || order > MAX_REFCOUNT_ORDER) {
    throw new VdiskError('EINVAL', `Unsupported refcount order ${order}`);
  }
}

/** Reads refcount `index` of a refcount block. 64-bit refcounts of 2^53 or more: EOVERFLOW. */
export function getRefcount(block: Buffer, index: number, order: number): number {
  if (order < 3 && (index < 0 || index >= (block.length * 8) >>> order)) {
    throw new RangeError(`Refcount index ${index} is outside the block`);
  }
  switch (order) {
    case 0:
      return (block[index >>> 3]! >>> (index & 7)) & 0x1;
    case 1:
      return (block[index >>> 2]! >>> ((index & 3) * 2)) & 0x3;
    case 2:
      return (block[index >>> 1]! >>> ((index & 1) * 4)) & 0xf;
    case 3:
      return block.readUInt8(index);
    case 4:
      return block.readUInt16BE(index * 2);
    case 5:
      return block.readUInt32BE(index * 4);
    case 6: {
      const high = block.readUInt32BE(index * 8);
      const low = block.readUInt32BE(index * 8 + 4);
      if (high > 0x1fffff) {
        throw new VdiskError('EOVERFLOW', `Refcount ${hex64(high, low)} is too large (2^53 or more is not supported)`);
      }
      return high * TWO_POW_32 + low;
    }
    default:
      checkOrder(order);
      return 0;
  }
}

/** Writes refcount `index` of a refcount block. Throws EINVAL if `value` does not fit the width. */
export function setRefcount(block: Buffer, index: number, order: number, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > maxRefcount(order)) {
    throw new VdiskError('EINVAL', `Refcount ${value} does not fit in ${2 ** order} bits`);
  }
  switch (order) {
    case 0:
    case 1:
    case 2: {
      if (index < 0 || index >= (block.length * 8) >>> order) {
        throw new RangeError(`Refcount index ${index} is outside the block`);
      }
      const bits = 2 ** order;
      const perByte = 8 / bits;
      const byte = Math.floor(index / perByte);
      const shift = (index % perByte) * bits;
      const mask = ((1 << bits) - 1) << shift;
      block[byte] = (block[byte]! & ~mask) | (value << shift);
      return;
    }
    case 3:
      block.writeUInt8(value, index);
      return;
    case 4:
      block.writeUInt16BE(value, index * 2);
      return;
    case 5:
      block.writeUInt32BE(value, index * 4);
      return;
    case 6: {
      const low = value % TWO_POW_32;
      block.writeUInt32BE((value - low) / TWO_POW_32, index * 8);
      block.writeUInt32BE(low, index * 8 + 4);
      return;
    }
  }
}

/**
 * Decodes refcount-table entry `index`: the refcount block offset, 0 if none.
 * Reserved bits or an unaligned offset: ECORRUPT; an offset of 2^53 or more: EOVERFLOW.
 */
export function decodeReftableEntry(table: Buffer, index: number, clusterSize: number): number {
  const off = index * REFTABLE_ENTRY_SIZE;
  const high = table.readUInt32BE(off);
  const low = table.readUInt32BE(off + 4);
  if ((low & 0x1ff) !== 0) {
    throw new VdiskError(
      'ECORRUPT',
      `Refcount table entry ${hex64(high, low)} has reserved bits set (reftable index: ${hex(index)})`,
    );
  }
  if (high > 0x1fffff) {
    throw new VdiskError(
      'EOVERFLOW',
      `Refblock offset ${hex64(high, low)} is too large (2^53 or more is not supported; reftable index: ${hex(index)})`,
    );
  }
  const offset = high * TWO_POW_32 + low;
  if (offset % clusterSize !== 0) {
    throw new VdiskError('ECORRUPT', `Refblock offset ${hex(offset)} unaligned (reftable index: ${hex(index)})`);
  }
  return offset;
}

/** Writes refcount-table entry `index`. */
export function encodeReftableEntry(table: Buffer, index: number, blockOffset: number, clusterSize: number): void {
  if (!Number.isSafeInteger(blockOffset) || blockOffset < 0 || blockOffset % clusterSize !== 0) {
    throw new VdiskError('EINVAL', `Refblock offset ${blockOffset} cannot be stored in the refcount table`);
  }
  const low = blockOffset % TWO_POW_32;
  table.writeUInt32BE((blockOffset - low) / TWO_POW_32, index * REFTABLE_ENTRY_SIZE);
  table.writeUInt32BE(low, index * REFTABLE_ENTRY_SIZE + 4);
}
