import { CMD_FLAG } from '../../nbd-wire/protocol.js';
import { acquireBuffer, releaseBuffer, releaserFor } from '../buffers.js';
import { isZero, zeroRuns } from '../extents.js';
import type { CommandRequest, Connection } from './command.js';

/** Reads at least this long are scanned for zero runs sent as holes. */
const SPARSE_SCAN_MIN = 128 * 1024;
/** Granularity of that scan (absolute offsets). */
const SPARSE_BLOCK = 64 * 1024;

/**
 * NBD_CMD_READ. With structured replies and without DF, zeros go back as holes: an all-zero
 * read as one, long zero runs of a long read as several between data chunks.
 */
export async function handleRead(req: CommandRequest, conn: Connection): Promise<void> {
  const { export: exp, replies } = conn;
  if (req.flags & CMD_FLAG.FUA) {
    // As qemu-nbd: FUA on a read flushes first.
    try {
      await exp.backend.flush();
    } catch (err) {
      replies.failure(req, 'flush failed', err);
      return;
    }
  }
  if (req.length === 0) {
    replies.emptyRead(req);
    return;
  }
  // Through the page cache, the data is read straight after room for the reply header, so
  // that the reply is one buffer; direct I/O needs an aligned buffer of its own.
  const whole = exp.alignedBuffers ? undefined : replies.allocateRead(req.length);
  const buf = whole ? replies.dataOf(whole) : acquireBuffer(req.length, exp.alignedBuffers);
  try {
    await exp.backend.readInto(req.offset, buf);
  } catch (err) {
    if (!whole) releaseBuffer(buf);
    replies.failure(req, 'reading from file failed', err);
    return;
  }
  const release = releaserFor(buf);
  if (replies.structured && (req.flags & CMD_FLAG.DF) === 0) {
    if (isZero(buf, 0, req.length)) {
      release?.();
      replies.holeChunk(req, req.offset, req.length, true);
      return;
    }
    if (req.length >= SPARSE_SCAN_MIN) {
      sendSparse(req, conn, buf, release);
      return;
    }
  }
  replies.read(req, buf, whole, release);
}

/** A read reply in which long runs of zeros go as holes and the rest as data chunks. */
function sendSparse(req: CommandRequest, conn: Connection, buf: Buffer, release: (() => void) | undefined): void {
  const { starts, zeros } = zeroRuns(buf, req.offset, SPARSE_BLOCK);
  let lastData = -1;
  for (let i = 0; i < starts.length; i++) if (!zeros[i]) lastData = i;
  for (let i = 0; i < starts.length; i++) {
    const start = starts[i]!;
    const stop = i + 1 < starts.length ? starts[i + 1]! : buf.length;
    const last = i + 1 === starts.length;
    if (zeros[i]) {
      conn.replies.holeChunk(req, req.offset + start, stop - start, last);
    } else {
      // The buffer goes back to the pool once the last view of it has been written out.
      const data = buf.subarray(start, stop);
      conn.replies.dataChunk(req, req.offset + start, data, last, i === lastData ? release : undefined);
    }
  }
  if (lastData < 0) release?.();
}
