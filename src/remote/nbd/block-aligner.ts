/**
 * Requests for a server that advertised a minimum block size (NBD_INFO_BLOCK_SIZE): having asked
 * for the sizes, the client promised to send only requests aligned to that minimum. A read that
 * is not aligned reads the blocks around it and copies the part asked for; a write that is not
 * aligned reads its first and last block, patches them and writes the whole blocks back
 * (read-modify-write). Such a write holds its blocks exclusively, so that no other write to
 * them lands between its read and its write and is silently undone; aligned writes share.
 */
import { RangeLock } from '../../util/range-lock.js';

/** Aligned requests as the connection sends them. */
export interface AlignedOps {
  read(offset: number, buf: Buffer): Promise<void>;
  write(offset: number, buf: Buffer, flags: number): Promise<void>;
}

export class BlockAligner {
  readonly #minimum: number;
  readonly #size: number;
  readonly #ops: AlignedOps;
  readonly #blocks = new RangeLock();

  /** `size`: the export's length (the last block may be short when the server's size is not a multiple). */
  constructor(minimum: number, size: number, ops: AlignedOps) {
    this.#minimum = minimum;
    this.#size = size;
    this.#ops = ops;
  }

  /** The first block boundary at or below `offset`. */
  down(offset: number): number {
    return offset - (offset % this.#minimum);
  }

  /** The first block boundary at or above `offset`, but not past the export's end (if `offset` is not). */
  up(offset: number): number {
    const rest = offset % this.#minimum;
    const boundary = rest === 0 ? offset : offset + this.#minimum - rest;
    return offset <= this.#size ? Math.min(boundary, this.#size) : boundary;
  }

  aligned(offset: number, length: number): boolean {
    return offset === this.down(offset) && offset + length === this.up(offset + length);
  }

  /** Runs an aligned request that changes data (zero write, trim) sharing its blocks with aligned writes. */
  async shared(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    if (this.#minimum === 1) return op();
    const release = await this.#blocks.acquire(offset, offset + length, 'shared');
    try {
      await op();
    } finally {
      release();
    }
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    if (this.aligned(offset, buf.length)) return this.#ops.read(offset, buf);
    const start = this.down(offset);
    const span = Buffer.allocUnsafe(this.up(offset + buf.length) - start);
    await this.#ops.read(start, span);
    span.copy(buf, 0, offset - start, offset - start + buf.length);
  }

  async write(offset: number, buf: Buffer, flags: number): Promise<void> {
    // Without a minimum every write is aligned, and there is nothing to serialise against.
    if (this.#minimum === 1) return this.#ops.write(offset, buf, flags);
    const start = this.down(offset);
    const end = this.up(offset + buf.length);
    const aligned = this.aligned(offset, buf.length);
    const release = await this.#blocks.acquire(start, end, aligned ? 'shared' : 'exclusive');
    try {
      if (aligned) return await this.#ops.write(offset, buf, flags);
      const span = Buffer.allocUnsafe(end - start);
      const head = offset - start;
      const tail = end - (offset + buf.length);
      const lastBlock = this.down(end - 1);
      if (head > 0) await this.#ops.read(start, span.subarray(0, Math.min(this.#minimum, end - start)));
      if (tail > 0 && !(head > 0 && lastBlock === start)) {
        await this.#ops.read(lastBlock, span.subarray(lastBlock - start));
      }
      buf.copy(span, head);
      await this.#ops.write(start, span, flags);
    } finally {
      release();
    }
  }
}
