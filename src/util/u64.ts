/**
 * The one place where 64-bit on-disk fields become JavaScript numbers.
 *
 * Numbers are exact up to 2^53; every 64-bit field is read as two 32-bit halves (much faster than
 * readBigUInt64BE) and refused with EOVERFLOW when it does not fit. Entry codecs that only need
 * some bits of a field (flags in the high word, an offset in bits 9-55) use the half-word readers
 * so that no BigInt is created on hot paths.
 */

import { VdiskError } from '../block/errors.js';

/** 2^32, the weight of the high half. */
export const TWO_POW_32 = 0x1_0000_0000;

/** 2^53: the first integer a double cannot tell from its neighbour. */
export const TWO_POW_53 = 2 ** 53;

/** The high half of a value below 2^53 is below this. */
const HIGH_LIMIT = 0x20_0000;

/** Formats the two halves of a 64-bit value as hex, for error messages. */
export function hex64(high: number, low: number): string {
  if (high === 0) return '0x' + low.toString(16);
  return '0x' + high.toString(16) + low.toString(16).padStart(8, '0');
}

/** Formats a number as 0x-prefixed hex. */
export function hex(value: number): string {
  return '0x' + value.toString(16);
}

/**
 * Reads an unsigned big-endian 64-bit field. Throws EOVERFLOW, naming `field`, if the value is
 * 2^53 or more.
 */
export function readU64(buf: Buffer, off: number, field = '64-bit field'): number {
  const high = buf.readUInt32BE(off);
  const low = buf.readUInt32BE(off + 4);
  if (high >= HIGH_LIMIT) {
    throw new VdiskError('EOVERFLOW', `${field} ${hex64(high, low)} is too large (2^53 or more is not supported)`);
  }
  return high * TWO_POW_32 + low;
}

/**
 * Reads an unsigned big-endian 64-bit field without the 2^53 check. The result is exact below
 * 2^53 and rounded above it; rounding keeps order, so comparisons against limits stay correct.
 * Use it only to validate a field before reading it exactly.
 */
export function readU64Approx(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off) * TWO_POW_32 + buf.readUInt32BE(off + 4);
}

/** Splits a non-negative safe integer into its 32-bit halves. */
export function splitU64(value: number, field = '64-bit field'): [high: number, low: number] {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new VdiskError('EOVERFLOW', `${field} ${value} is not an integer between 0 and 2^53`);
  }
  const low = value % TWO_POW_32;
  return [(value - low) / TWO_POW_32, low];
}

/** Writes an unsigned big-endian 64-bit field from a non-negative safe integer. */
export function writeU64(buf: Buffer, off: number, value: number, field?: string): void {
  const [high, low] = splitU64(value, field);
  buf.writeUInt32BE(high, off);
  buf.writeUInt32BE(low, off + 4);
}

/**
 * Writes a 64-bit field given as halves plus flag bits: `flagsHigh` is ORed into the high word
 * (for bits 32-63, e.g. 0x80000000 for bit 63) and `flagsLow` into the low word.
 */
export function writeU64Flags(buf: Buffer, off: number, value: number, flagsHigh: number, flagsLow: number): void {
  const [high, low] = splitU64(value);
  buf.writeUInt32BE((high | flagsHigh) >>> 0, off);
  buf.writeUInt32BE((low | flagsLow) >>> 0, off + 4);
}

/**
 * Extracts bits [lowBit, highBit] (inclusive, 0 = least significant) of a 64-bit value given as
 * halves, as a number. The field must be at most 53 bits wide; no BigInt is involved.
 */
export function bitsOf(high: number, low: number, lowBit: number, highBit: number): number {
  const width = highBit - lowBit + 1;
  if (width <= 0 || width > 53 || lowBit < 0 || highBit > 63) throw new RangeError('bad bit range');
  // Assemble from the two words without 32-bit operator overflow.
  let value = 0;
  if (highBit >= 32) {
    const hTop = highBit - 32;
    const hBottom = Math.max(lowBit, 32) - 32;
    const hWidth = hTop - hBottom + 1;
    const hBits = hWidth === 32 ? high >>> 0 : (high >>> hBottom) & (2 ** hWidth - 1);
    value = hBits;
  }
  if (lowBit < 32) {
    const lTop = Math.min(highBit, 31);
    const lWidth = lTop - lowBit + 1;
    const lBits = lWidth === 32 ? low >>> 0 : (low >>> lowBit) & (2 ** lWidth - 1);
    value = value * 2 ** lWidth + (lBits >>> 0);
  }
  return value;
}

/** Reads bits [lowBit, highBit] of the big-endian 64-bit field at `off` (at most 53 bits wide). */
export function readU64Bits(buf: Buffer, off: number, lowBit: number, highBit: number): number {
  return bitsOf(buf.readUInt32BE(off), buf.readUInt32BE(off + 4), lowBit, highBit);
}
