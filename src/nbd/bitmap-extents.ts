/**
 * The qemu:dirty-bitmap:NAME extents of a BLOCK_STATUS request: runs of dirty (STATE_DIRTY) and
 * clean (0) guest bytes, from the bitmap's bits, bounded as the other contexts are.
 */
import type { DirtyBitmapView } from '../block/driver.js';
import { STATE_DIRTY } from '../nbd-wire/protocol.js';
import type { ExtentList } from '../nbd-wire/transmission-codec.js';
import { addExtent, MAX_STATUS_STEPS } from './extents.js';

/** The extents of [offset, offset+length): one with `one` (REQ_ONE), else up to the bounds. */
export async function bitmapExtents(
  bitmap: DirtyBitmapView,
  offset: number,
  length: number,
  one: boolean,
): Promise<ExtentList> {
  const list: ExtentList = { lengths: [], flags: [], count: 0 };
  const end = Math.min(offset + length, bitmap.size);
  let pos = offset;
  for (let steps = 0; pos < end && steps < MAX_STATUS_STEPS; steps++) {
    const run = await bitmap.run(pos, end - pos);
    if (!(run.length > 0)) break;
    const full = addExtent(list, run.length, run.dirty ? STATE_DIRTY : 0);
    pos += run.length;
    if (one || full) break;
  }
  // Nothing past the bitmap's end is dirty.
  if (list.count === 0) addExtent(list, length, 0);
  return list;
}
