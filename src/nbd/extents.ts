/**
 * What BLOCK_STATUS and sparse READ replies are made of: the extents of both metadata contexts
 * from the backend's block status, and the zero runs of a buffer that was read.
 */
import type { BlockBackend } from '../block/backend.js';
import type { Extent } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import { STATE_HOLE, STATE_ZERO } from '../nbd-wire/protocol.js';
import type { ExtentList } from '../nbd-wire/transmission-codec.js';

/** Extents one BLOCK_STATUS reply may carry per context (qemu-nbd sends at most 2^17). */
export const MAX_EXTENTS = 1 << 17;
/**
 * The work one BLOCK_STATUS request may do: steps (each a bounded piece of the image's work, see
 * BlockBackend.blockStatusMany) and extents looked at. The answer then covers less than asked, as
 * the NBD spec allows, and the client asks again from where it ends.
 */
export const MAX_STATUS_STEPS = 1024;
export const MAX_STATUS_EXTENTS = 1 << 17;

/** True when buf[start, end) is all zero bytes (one native compare of the range with itself shifted). */
export function isZero(buf: Buffer, start: number, end: number): boolean {
  if (end <= start) return true;
  if (buf[start] !== 0) return false;
  return buf.compare(buf, start, end - 1, start + 1, end) === 0;
}

/**
 * The runs of `buf` (read at guest `offset`) that are zero or not, looked at in blocks of
 * `block` bytes aligned to guest offsets: the start of each run and whether it is zero.
 */
export function zeroRuns(buf: Buffer, offset: number, block: number): { starts: number[]; zeros: boolean[] } {
  const starts: number[] = [];
  const zeros: boolean[] = [];
  for (let pos = 0; pos < buf.length; ) {
    const blockEnd = Math.min(buf.length, pos + block - ((offset + pos) % block));
    const zero = isZero(buf, pos, blockEnd);
    if (starts.length === 0 || zeros[zeros.length - 1] !== zero) {
      starts.push(pos);
      zeros.push(zero);
    }
    pos = blockEnd;
  }
  return { starts, zeros };
}

/**
 * The qemu:allocation-depth value of an extent: 0 when no layer of the chain allocates the
 * range, else 1 for the image itself, 2 for its backing file, and so on.
 */
export function allocationDepth(extent: Extent): number {
  return extent.allocated ? (extent.depth ?? 0) + 1 : 0;
}

/** The base:allocation flags of an extent, as qemu-nbd derives them (HOLE unless data, ZERO if zero). */
export function allocationFlags(extent: Extent): number {
  return (extent.data ? 0 : STATE_HOLE) | (extent.zero ? STATE_ZERO : 0);
}

/** Appends an extent, merging it into the previous one when the flags agree. True when the list is full. */
export function addExtent(list: ExtentList, length: number, flags: number): boolean {
  const last = list.count - 1;
  if (last >= 0 && list.flags[last] === flags && list.lengths[last]! + length <= 0xffffffff) {
    list.lengths[last] = list.lengths[last]! + length;
    return false;
  }
  list.lengths.push(length);
  list.flags.push(flags);
  list.count++;
  return list.count >= MAX_EXTENTS;
}

/**
 * The extents of [offset, offset+length) for base:allocation and qemu:allocation-depth, from
 * the start on: one with `one` (REQ_ONE), else as many as the work bounds allow. Throws only if
 * not even the first extent could be found; a later failure ends the answer early.
 */
export async function queryExtents(
  backend: BlockBackend,
  offset: number,
  length: number,
  one: boolean,
): Promise<{ base: ExtentList; depth: ExtentList }> {
  const base: ExtentList = { lengths: [], flags: [], count: 0 };
  const depth: ExtentList = { lengths: [], flags: [], count: 0 };
  const end = offset + length;
  let pos = offset;
  try {
    if (one) {
      const extent = await backend.blockStatus(pos, end - pos);
      pos += add(base, depth, extent, pos, end);
      return { base, depth };
    }
    let looked = 0;
    for (let steps = 0; pos < end && steps < MAX_STATUS_STEPS && looked < MAX_STATUS_EXTENTS; steps++) {
      // A turn of the event loop between steps: other requests and clients are served meanwhile.
      if (steps > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const extents = await backend.blockStatusMany(pos, end - pos);
      for (const extent of extents) {
        if (pos >= end || looked >= MAX_STATUS_EXTENTS) break;
        pos += add(base, depth, extent, pos, end);
        looked++;
        if (base.count >= MAX_EXTENTS || depth.count >= MAX_EXTENTS) return { base, depth };
      }
    }
  } catch (err) {
    if (pos === offset) throw err;
    // Report what is known; the client asks again from where the answer ends.
  }
  return { base, depth };
}

/** Adds one extent found at `pos` to both lists; returns its length within the request. */
function add(base: ExtentList, depth: ExtentList, extent: Extent, pos: number, end: number): number {
  const len = Math.min(extent.length, end - pos);
  if (!(len > 0)) throw new VdiskError('EIO', `empty block status at offset ${pos}`);
  addExtent(base, len, allocationFlags(extent));
  addExtent(depth, len, allocationDepth(extent));
  return len;
}
