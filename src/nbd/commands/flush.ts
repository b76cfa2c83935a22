import { type CommandRequest, type Connection, replyWhenDone } from './command.js';

/** NBD_CMD_FLUSH: what every connection wrote (they share one image) reaches stable storage. */
export function handleFlush(req: CommandRequest, conn: Connection): Promise<void> {
  return replyWhenDone(req, conn, conn.export.backend.flush(), 'flush failed');
}
