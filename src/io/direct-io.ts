/**
 * Reads and writes on an O_DIRECT file descriptor, where the kernel accepts only requests whose
 * offset, length and memory are aligned to the logical block size. Aligned requests in pool
 * buffers go straight to the kernel; the rest go through aligned bounce buffers, and a write
 * that covers part of a block reads the block first (read-modify-write). Such writes hold their
 * blocks exclusively in a FifoRangeLock, so that no other write to those blocks is undone by them.
 */
import { alignedPool } from './aligned.js';
import { FifoRangeLock } from './fifo-range-lock.js';
import { preadFull, pwriteFull } from './positioned-io.js';
import { ftruncate } from './posix.js';

/** Largest single host request; bigger requests are split (bounds bounce-buffer memory). */
export const DIRECT_CHUNK = 4 << 20;

/** The file length, as the driver that owns it keeps it. */
export interface LengthKeeper {
  get(): number;
  /** Records that the file now reaches at least `end`. */
  grow(end: number): void;
}

export class DirectIo {
  /** Serialises read-modify-writes against other writes to the same blocks. */
  readonly blocks = new FifoRangeLock();

  constructor(
    private readonly fd: number,
    readonly blockSize: number,
    private readonly length: LengthKeeper,
  ) {}

  async read(offset: number, buf: Buffer): Promise<void> {
    const bs = this.blockSize;
    const len = buf.length;
    if (offset % bs === 0 && len % bs === 0 && alignedPool.owns(buf)) {
      const n = await preadFull(this.fd, buf, 0, len, offset, bs);
      if (n < len) buf.fill(0, n);
      return;
    }
    for (let done = 0; done < len; ) {
      const pos = offset + done;
      const skip = pos % bs;
      const want = Math.min(len - done, DIRECT_CHUNK - skip);
      const span = alignUp(skip + want, bs);
      const bounce = alignedPool.acquire(span);
      try {
        const n = await preadFull(this.fd, bounce, 0, span, pos - skip, bs);
        const got = Math.max(0, Math.min(want, n - skip));
        bounce.copy(buf, done, skip, skip + got);
        if (got < want) buf.fill(0, done + got, done + want); // past EOF
      } finally {
        alignedPool.release(bounce);
      }
      done += want;
    }
  }

  async write(offset: number, buf: Buffer): Promise<void> {
    const bs = this.blockSize;
    const len = buf.length;
    if (len === 0) return;
    const end = offset + len;
    const start = alignDown(offset, bs);
    const stop = alignUp(end, bs);
    const aligned = start === offset && stop === end;
    // A padded last block past EOF grows the file too far; trimming it back must not race with
    // other writes that extend the file, so such a write holds everything from its start on.
    const trim = stop > end && stop > this.length.get();
    const hold = await this.blocks.lock(start, trim ? Number.POSITIVE_INFINITY : stop, !aligned);
    try {
      if (aligned && alignedPool.owns(buf)) {
        await pwriteFull(this.fd, buf, 0, len, offset);
      } else {
        for (let done = 0; done < len; ) {
          const pos = offset + done;
          const skip = pos % bs;
          const want = Math.min(len - done, DIRECT_CHUNK - skip);
          await this.writeChunk(pos - skip, skip, buf.subarray(done, done + want));
          done += want;
        }
      }
      if (trim) await ftruncate(this.fd, Math.max(this.length.get(), end));
      // Before unlocking, so that a waiting write that trims sees this write's end.
      this.length.grow(end);
    } finally {
      this.blocks.unlock(hold);
    }
  }

  /** Writes `data` at blockStart+skip through a bounce buffer, reading partial blocks first. */
  private async writeChunk(blockStart: number, skip: number, data: Buffer): Promise<void> {
    const bs = this.blockSize;
    const span = alignUp(skip + data.length, bs);
    const bounce = alignedPool.acquire(span);
    try {
      const headPartial = skip > 0;
      const tailPartial = (skip + data.length) % bs !== 0;
      if (headPartial) await this.readBlock(bounce, 0, blockStart);
      if (tailPartial && !(headPartial && span === bs)) await this.readBlock(bounce, span - bs, blockStart + span - bs);
      data.copy(bounce, skip);
      await pwriteFull(this.fd, bounce, 0, span, blockStart);
    } finally {
      alignedPool.release(bounce);
    }
  }

  private async readBlock(bounce: Buffer, at: number, position: number): Promise<void> {
    const bs = this.blockSize;
    const n = await preadFull(this.fd, bounce, at, bs, position, bs);
    if (n < bs) bounce.fill(0, at + n, at + bs);
  }
}

export function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

export function alignUp(value: number, alignment: number): number {
  const rest = value % alignment;
  return rest === 0 ? value : value + alignment - rest;
}
