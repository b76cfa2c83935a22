import { type CommandRequest, type Connection, replyWhenDone } from './command.js';

/** NBD_CMD_CACHE reads through a buffer of at most this many bytes. */
const CACHE_CHUNK = 4 * 1024 * 1024;
/**
 * Where every NBD_CMD_CACHE reads to: what it reads is thrown away, so all of them, at once,
 * may share one buffer, and a flood of them holds no memory.
 */
let cacheScratch: Buffer | undefined;

/** NBD_CMD_CACHE: reads the range so that later reads find it in the host page cache. */
export function handleCache(req: CommandRequest, conn: Connection): Promise<void> {
  return replyWhenDone(req, conn, prefetch(req, conn), 'caching data failed');
}

async function prefetch(req: CommandRequest, conn: Connection): Promise<void> {
  const { offset, length } = req;
  // Prefetching only helps when the host page cache is in use.
  if (conn.export.alignedBuffers || length === 0) return;
  cacheScratch ??= Buffer.allocUnsafe(CACHE_CHUNK);
  const buf = cacheScratch;
  for (let done = 0; done < length; done += buf.length) {
    const n = Math.min(buf.length, length - done);
    await conn.export.backend.readInto(offset + done, n === buf.length ? buf : buf.subarray(0, n));
  }
}
