/**
 * Entry helpers of `check`: the raw words of L1 and L2 entries as QEMU's check reads them when
 * the codecs refuse an entry (reserved bits, unaligned or huge offsets), and the repaired
 * entries, encoded with the codecs.
 */
import { hex64, TWO_POW_32 } from '../../../util/u64.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import { encodeL2 } from '../codec/l2-entry.js';

/** The words of an L2 entry: the descriptor, and for extended L2 the zero and allocation bitmaps. */
export interface Words {
  high: number;
  low: number;
  zeroW: number;
  allocW: number;
}

export const COPIED_HIGH = 0x80000000;
export const COMPRESSED_HIGH = 0x40000000;
/** Bits 32-55 of a standard offset, in the high word. */
export const OFFSET_HIGH = 0xffffff;
/** Offsets whose high word is above this are 2^53 or more. */
export const SAFE_HIGH = 0x1fffff;

/** A 64-bit value in hex without a prefix, as QEMU's PRIx64 prints it. */
export function bare(high: number, low: number): string {
  return hex64(high >>> 0, low >>> 0).slice(2);
}

/**
 * Whether the codec is likely to accept an entry. Entries it refuses go straight to the lenient
 * path: a codec error costs a stack trace, and a hostile table has millions of bad entries.
 */
export function plausibleL1(high: number, low: number, cs: number): boolean {
  return (high & 0x7fe00000) === 0 && (low & 0x1ff) === 0 && ((low & 0xfffffe00) >>> 0) % cs === 0;
}

export function plausibleL2(w: Words, clusterBits: number, extended: boolean): boolean {
  if ((w.high & COMPRESSED_HIGH) !== 0) {
    const x = 62 - (clusterBits - 8);
    return (w.high & COPIED_HIGH) === 0 && (w.zeroW | w.allocW) === 0 && (w.high & (2 ** (x - 32) - 1)) <= SAFE_HIGH;
  }
  if ((w.high & 0x3fe00000) !== 0 || (w.low & (extended ? 0x1ff : 0x1fe)) !== 0) return false;
  if (((w.low & 0xfffffe00) >>> 0) % 2 ** clusterBits !== 0) return false;
  return !extended || (w.zeroW & w.allocW) === 0;
}

/**
 * qcow2_parse_compressed_l2_entry on the raw words (whatever the COPIED bit): the host byte
 * offset (undefined at 2^53 or more), its hex, and the bytes its sectors hold.
 */
export function compressedParts(
  w: Words,
  clusterBits: number,
): { offset: number | undefined; hex: string; size: number } {
  const x = 62 - (clusterBits - 8);
  const offHigh = w.high & (2 ** (x - 32) - 1);
  const sectors = ((w.high >>> (x - 32)) & (2 ** (clusterBits - 8) - 1)) + 1;
  return {
    offset: offHigh > SAFE_HIGH ? undefined : offHigh * TWO_POW_32 + w.low,
    hex: bare(offHigh, w.low),
    size: sectors * 512 - (w.low & 511),
  };
}

/** An entry can be made to read as zeros without a backing file showing through. */
export function canReadAsZeros(g: Qcow2Geometry, hasBacking: boolean): boolean {
  return g.extendedL2 || g.version >= 3 || !hasBacking;
}

/**
 * What QEMU's fix_l2_entry_by_zero writes: a zero cluster (v3), zero subclusters where any were
 * allocated (extended L2), or an unallocated entry (v2 without a backing file).
 */
export function zeroedEntry(g: Qcow2Geometry, w: Words): Buffer {
  const data = Buffer.alloc(g.l2EntrySize);
  if (g.extendedL2) encodeL2(data, 0, { kind: 'unallocated', sub: { alloc: 0, zero: (w.zeroW | w.allocW) >>> 0 } }, g);
  else if (g.version >= 3) encodeL2(data, 0, { kind: 'zero', host: 0, copied: false }, g);
  else encodeL2(data, 0, { kind: 'unallocated' }, g);
  return data;
}

/** The entry naming cluster `host` instead, with the same flags; undefined if it cannot be encoded. */
export function realignedEntry(g: Qcow2Geometry, w: Words, host: number): Buffer | undefined {
  const data = Buffer.alloc(g.l2EntrySize);
  const copied = (w.high & COPIED_HIGH) !== 0;
  try {
    if (g.extendedL2) encodeL2(data, 0, { kind: 'data', host, copied, sub: { alloc: w.allocW, zero: w.zeroW } }, g);
    else encodeL2(data, 0, { kind: 'data', host, copied }, g);
  } catch {
    return undefined;
  }
  return data;
}
