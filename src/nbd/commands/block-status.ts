import { CMD_FLAG, CONTEXT_ID_ALLOCATION_DEPTH, CONTEXT_ID_BASE_ALLOCATION, NBD_ERR } from '../../nbd-wire/protocol.js';
import type { ExtentList } from '../../nbd-wire/transmission-codec.js';
import { queryExtents } from '../extents.js';
import type { CommandRequest, Connection } from './command.js';

/** NBD_CMD_BLOCK_STATUS: one chunk per selected metadata context, the last one marked done. */
export async function handleBlockStatus(req: CommandRequest, conn: Connection): Promise<void> {
  const { replies, baseAllocation, allocationDepth } = conn;
  if (!baseAllocation && !allocationDepth) {
    replies.error(req, NBD_ERR.EINVAL, 'CMD_BLOCK_STATUS not negotiated');
    return;
  }
  if (req.length === 0) {
    replies.error(req, NBD_ERR.EINVAL, 'need non-zero length');
    return;
  }
  let extents: { base: ExtentList; depth: ExtentList };
  try {
    extents = await queryExtents(conn.export.backend, req.offset, req.length, (req.flags & CMD_FLAG.REQ_ONE) !== 0);
  } catch (err) {
    replies.failure(req, "can't get block status", err);
    return;
  }
  if (baseAllocation) replies.blockStatusChunk(req, CONTEXT_ID_BASE_ALLOCATION, extents.base, !allocationDepth);
  if (allocationDepth) replies.blockStatusChunk(req, CONTEXT_ID_ALLOCATION_DEPTH, extents.depth, true);
}
