/**
 * What every command handler works with: one request, and the connection it came on (the
 * export to call down to, the replies to answer with). A handler answers its own errors; the
 * session has checked the request against the export before it runs.
 */

import type { Request } from '../../nbd-wire/transmission-codec.js';
import type { NbdExport } from '../export.js';
import type { Replies } from '../replies.js';

/** One request as its handler sees it: the decoded header, and a WRITE's payload. */
export interface CommandRequest extends Readonly<Request> {
  readonly payload: Buffer | undefined;
  /** The payload came from the aligned pool and goes back to it when the write is done. */
  readonly pooled: boolean;
}

/** The connection, as handlers see it. */
export interface Connection {
  readonly export: NbdExport;
  readonly replies: Replies;
  /** The metadata contexts the client selected for BLOCK_STATUS. */
  readonly baseAllocation: boolean;
  readonly allocationDepth: boolean;
  /** Indexes of the export's dirty bitmaps selected (qemu:dirty-bitmap:NAME). */
  readonly dirtyBitmaps: readonly number[];
  /** Reads no more requests; closes once those in flight are answered. */
  disconnect(): void;
}

/** A request header, copied out of the decoder's reused object, with its payload. */
export function commandRequest(header: Request, payload: Buffer | undefined, pooled: boolean): CommandRequest {
  const { type, flags, cookieHi, cookieLo, offset, length } = header;
  return { type, flags, cookieHi, cookieLo, offset, length, payload, pooled };
}

export type CommandHandler = (req: CommandRequest, conn: Connection) => Promise<void>;

/** Answers a command whose reply carries no data: success once `op` is done, else its error. */
export async function replyWhenDone(
  req: CommandRequest,
  conn: Connection,
  op: Promise<void>,
  what: string,
): Promise<void> {
  try {
    await op;
  } catch (err) {
    conn.replies.failure(req, what, err);
    return;
  }
  conn.replies.ok(req);
}
