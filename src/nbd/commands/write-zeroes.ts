import { CMD_FLAG } from '../../nbd-wire/protocol.js';
import { type CommandRequest, type Connection, replyWhenDone } from './command.js';

/** NBD_CMD_WRITE_ZEROES: NO_HOLE keeps the range allocated; FAST_ZERO fails rather than write slowly. */
export function handleWriteZeroes(req: CommandRequest, conn: Connection): Promise<void> {
  const exp = conn.export;
  const flags = req.flags;
  const op = exp.backend.writeZeroes(req.offset, req.length, {
    fua: (flags & CMD_FLAG.FUA) !== 0,
    mayUnmap: exp.discard === 'unmap' && (flags & CMD_FLAG.NO_HOLE) === 0,
    noFallback: (flags & CMD_FLAG.FAST_ZERO) !== 0,
  });
  return replyWhenDone(req, conn, op, 'writing to file failed');
}
