import { CMD_FLAG } from '../../nbd-wire/protocol.js';
import { releaseBuffer } from '../buffers.js';
import { isZero } from '../extents.js';
import type { CommandRequest, Connection } from './command.js';

const FUA = { fua: true };
const NO_FLAGS = {};

/** NBD_CMD_WRITE; with detect-zeroes, a payload of zeros is written as zeroes (unmapped if allowed). */
export async function handleWrite(req: CommandRequest, conn: Connection): Promise<void> {
  const exp = conn.export;
  const payload = req.payload!;
  const fua = (req.flags & CMD_FLAG.FUA) !== 0;
  try {
    if (exp.detectZeroes !== 'off' && isZero(payload, 0, payload.length)) {
      await exp.backend.writeZeroes(req.offset, payload.length, {
        fua,
        mayUnmap: exp.detectZeroes === 'unmap' && exp.discard === 'unmap',
      });
    } else {
      await exp.backend.write(req.offset, payload, fua ? FUA : NO_FLAGS);
    }
  } catch (err) {
    conn.replies.failure(req, 'writing to file failed', err);
    return;
  } finally {
    if (req.pooled) releaseBuffer(payload);
  }
  conn.replies.ok(req);
}
