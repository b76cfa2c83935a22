import type { CommandRequest, Connection } from './command.js';

/** NBD_CMD_DISC: no reply (the spec allows none); the requests before it are still answered. */
export async function handleDisconnect(_req: CommandRequest, conn: Connection): Promise<void> {
  conn.disconnect();
}
