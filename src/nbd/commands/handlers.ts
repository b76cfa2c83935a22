/** The handler of each command the server knows. */
import { CMD } from '../../nbd-wire/protocol.js';
import { handleBlockStatus } from './block-status.js';
import { handleCache } from './cache.js';
import type { CommandHandler } from './command.js';
import { handleDisconnect } from './disconnect.js';
import { handleFlush } from './flush.js';
import { handleRead } from './read.js';
import { handleTrim } from './trim.js';
import { handleWrite } from './write.js';
import { handleWriteZeroes } from './write-zeroes.js';

const HANDLERS: { readonly [type: number]: CommandHandler | undefined } = {
  [CMD.READ]: handleRead,
  [CMD.WRITE]: handleWrite,
  [CMD.DISC]: handleDisconnect,
  [CMD.FLUSH]: handleFlush,
  [CMD.TRIM]: handleTrim,
  [CMD.CACHE]: handleCache,
  [CMD.WRITE_ZEROES]: handleWriteZeroes,
  [CMD.BLOCK_STATUS]: handleBlockStatus,
};

/** The handler of `type`; validation has refused every type without one. */
export function handlerFor(type: number): CommandHandler {
  return HANDLERS[type]!;
}
