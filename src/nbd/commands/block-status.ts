import {
  CMD_FLAG,
  CONTEXT_ID_ALLOCATION_DEPTH,
  CONTEXT_ID_BASE_ALLOCATION,
  CONTEXT_ID_FIRST_DIRTY_BITMAP,
  NBD_ERR,
} from '../../nbd-wire/protocol.js';
import type { ExtentList } from '../../nbd-wire/transmission-codec.js';
import { bitmapExtents } from '../bitmap-extents.js';
import { queryExtents } from '../extents.js';
import type { CommandRequest, Connection } from './command.js';

/** NBD_CMD_BLOCK_STATUS: one chunk per selected metadata context, the last one marked done. */
export async function handleBlockStatus(req: CommandRequest, conn: Connection): Promise<void> {
  const { replies, baseAllocation, allocationDepth, dirtyBitmaps } = conn;
  if (!baseAllocation && !allocationDepth && dirtyBitmaps.length === 0) {
    replies.error(req, NBD_ERR.EINVAL, 'CMD_BLOCK_STATUS not negotiated');
    return;
  }
  if (req.length === 0) {
    replies.error(req, NBD_ERR.EINVAL, 'need non-zero length');
    return;
  }
  const one = (req.flags & CMD_FLAG.REQ_ONE) !== 0;
  let extents: { base: ExtentList; depth: ExtentList } | undefined;
  const bitmaps: ExtentList[] = [];
  try {
    if (baseAllocation || allocationDepth) {
      extents = await queryExtents(conn.export.backend, req.offset, req.length, one);
    }
    for (const i of dirtyBitmaps) {
      bitmaps.push(await bitmapExtents(conn.export.bitmaps[i]!, req.offset, req.length, one));
    }
  } catch (err) {
    replies.failure(req, "can't get block status", err);
    return;
  }
  const last = dirtyBitmaps.length === 0;
  if (extents && baseAllocation) {
    replies.blockStatusChunk(req, CONTEXT_ID_BASE_ALLOCATION, extents.base, last && !allocationDepth);
  }
  if (extents && allocationDepth) replies.blockStatusChunk(req, CONTEXT_ID_ALLOCATION_DEPTH, extents.depth, last);
  for (const [k, i] of dirtyBitmaps.entries()) {
    replies.blockStatusChunk(req, CONTEXT_ID_FIRST_DIRTY_BITMAP + i, bitmaps[k]!, k === dirtyBitmaps.length - 1);
  }
}
