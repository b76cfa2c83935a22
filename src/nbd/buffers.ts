/**
 * Request buffers: 4096-aligned ones from the shared pool when the image bypasses the page
 * cache (so that direct I/O needs no bounce copy), ordinary ones otherwise or when the pool is
 * exhausted.
 */
import { alignedPool } from '../io/aligned.js';
import type { ByteQueue } from '../nbd-wire/input.js';

export function acquireBuffer(length: number, aligned: boolean): Buffer {
  if (aligned) {
    try {
      return alignedPool.acquire(length);
    } catch {
      // The pool is exhausted (many large requests at once): an ordinary buffer still works.
    }
  }
  return Buffer.allocUnsafe(length);
}

export function isPooled(buf: Buffer): boolean {
  return alignedPool.owns(buf);
}

/** Gives a pooled buffer back (ordinary ones are left to the garbage collector). */
export function releaseBuffer(buf: Buffer): void {
  if (alignedPool.owns(buf)) alignedPool.release(buf);
}

/** A callback that releases `buf` once (for a socket write's completion), if it is pooled. */
export function releaserFor(buf: Buffer): (() => void) | undefined {
  if (!alignedPool.owns(buf)) return undefined;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    alignedPool.release(buf);
  };
}

/**
 * Consumes a WRITE payload of `length` bytes: a view of the received bytes where they lie in one
 * chunk and the image uses the page cache; else one copy into a pooled buffer (`pooled`: it must
 * go back to the pool). Pooled memory stays mapped, where a fresh buffer per request would cost a
 * page fault for every page of it; it is 4096-aligned, as direct I/O needs.
 */
export function takePayload(queue: ByteQueue, length: number, aligned: boolean): { payload: Buffer; pooled: boolean } {
  if (length === 0 || (!aligned && queue.contiguous(length))) return { payload: queue.take(length), pooled: false };
  const payload = acquireBuffer(length, true);
  queue.takeInto(payload, 0, length);
  return { payload, pooled: isPooled(payload) };
}
