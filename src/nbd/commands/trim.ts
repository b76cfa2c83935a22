import { CMD_FLAG } from '../../nbd-wire/protocol.js';
import { type CommandRequest, type Connection, replyWhenDone } from './command.js';

/** NBD_CMD_TRIM: a hint that the range is no longer needed. */
export function handleTrim(req: CommandRequest, conn: Connection): Promise<void> {
  return replyWhenDone(req, conn, trim(req, conn), 'discard failed');
}

async function trim(req: CommandRequest, conn: Connection): Promise<void> {
  const exp = conn.export;
  // --discard=ignore (qemu-nbd's default): the hint is accepted and dropped.
  if (exp.discard === 'unmap' && req.length > 0) await exp.backend.discard(req.offset, req.length);
  if (req.flags & CMD_FLAG.FUA) await exp.backend.flush();
}
