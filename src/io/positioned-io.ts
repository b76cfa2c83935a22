/**
 * Positioned reads and writes on raw file descriptors: the hot path of every request, so each
 * call chooses the cheapest way to run.
 *
 * libuv's thread pool costs a hand-off to a worker and a wake-up of the loop per call (two
 * context switches: as much as all the rest of a 4 KiB NBD request, more on a busy machine,
 * where the woken worker preempts the loop). It buys concurrency only when other requests are
 * waiting and the call itself waits for a device. So:
 * - any call runs on the loop thread when at most one block-layer request is in progress (a
 *   guest at queue depth 1, a tool's single stream);
 * - a small buffered write always does: it is a copy into the page cache;
 * - a small buffered read tries the page cache without blocking (preadv2 RWF_NOWAIT) first;
 * - the rest (O_DIRECT I/O with others in flight, large copies) goes to the pool.
 * Node's callback API is used for the pool, not fs.promises: fewer allocations per call.
 */
import fs from 'node:fs';
import { requestsInFlight } from '../block/requests-in-flight.js';
import { native } from './native.js';
import { errnoCode } from './posix.js';

/** True when nothing but the caller's request can be waiting for the loop. */
export function runsInline(): boolean {
  return requestsInFlight() <= 1;
}

/** Buffered reads and writes up to this long are page-cache copies worth doing inline. */
const SMALL_BUFFERED = 256 * 1024;

/** The result of a synchronous call as a settled promise, so that callers see one shape. */
function settled<T>(call: () => T): Promise<T> {
  try {
    return Promise.resolve(call());
  } catch (err) {
    return Promise.reject(err);
  }
}

export function pread(
  fd: number,
  buf: Buffer,
  at: number,
  length: number,
  position: number,
  inline = runsInline(),
): Promise<number> {
  if (inline) return settled(() => fs.readSync(fd, buf, at, length, position));
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

export function pwrite(
  fd: number,
  buf: Buffer,
  at: number,
  length: number,
  position: number,
  inline = runsInline(),
): Promise<number> {
  if (inline) return settled(() => fs.writeSync(fd, buf, at, length, position));
  return new Promise((resolve, reject) =>
    fs.write(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

/**
 * Reads buf[at, at+length) from `position`, looping over short reads. Returns the bytes read,
 * less than `length` only at end of file. With `unit` > 1 (O_DIRECT), a count that is not a
 * multiple of `unit` can only be end of file, and continuing would be an unaligned request.
 */
export async function preadFull(
  fd: number,
  buf: Buffer,
  at: number,
  length: number,
  position: number,
  unit = 1,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await pread(fd, buf, at + done, length - done, position + done);
    if (n === 0) break;
    done += n;
    if (n % unit !== 0) break;
  }
  return done;
}

/** Writes buf[at, at+length) at `position`, looping over short writes. */
export async function pwriteFull(
  fd: number,
  buf: Buffer,
  at: number,
  length: number,
  position: number,
  inline = runsInline(),
): Promise<void> {
  let done = 0;
  while (done < length) {
    const n = await pwrite(fd, buf, at + done, length - done, position + done, inline);
    if (n === 0) throw Object.assign(new Error('pwrite wrote nothing'), { code: 'EIO' });
    done += n;
  }
}

/** pwriteFull for a file opened without O_DIRECT. */
export function pwriteBuffered(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<void> {
  return pwriteFull(fd, buf, at, length, position, length <= SMALL_BUFFERED || runsInline());
}

/**
 * fdatasync(2), on the loop thread when nothing else waits and the caller knows little can be
 * dirty (each write synced, or O_DIRECT): then it takes about as long as one disk write, and
 * the pool's hand-off would add a sixth to it. After many buffered writes it can take seconds,
 * which the loop must not spend blocked.
 */
export function fdatasyncQuick(fd: number, littleDirty: boolean): Promise<void> {
  if (littleDirty && runsInline()) return settled(() => fs.fdatasyncSync(fd));
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

/** Ranges up to this long are fallocated on the loop thread when it runs inline. */
const INLINE_FALLOCATE_MAX = 16 << 20;

/** fallocate(2): on the loop thread for a small range when nothing else waits, else on the pool. */
export function fallocate(fd: number, mode: number, offset: number, length: number): Promise<void> {
  if (length <= INLINE_FALLOCATE_MAX && runsInline()) {
    return settled(() => native().fallocateNow(fd, mode, offset, length));
  }
  return native().fallocate(fd, mode, offset, length);
}

/** Cleared when the kernel or the build lacks preadv2(RWF_NOWAIT) for this kind of file. */
let cachedReadsWork = true;

/** The bytes of a buffered read the page cache holds now, without blocking; -1 when unknown. */
function readCached(fd: number, buf: Buffer, at: number, length: number, position: number): number {
  if (!cachedReadsWork) return -1;
  try {
    return native().readCached(fd, buf, at, length, position);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EIO' || code === 'EBADF' || code === 'EISDIR') throw err;
    cachedReadsWork = false; // EOPNOTSUPP, EINVAL, ENOSYS, or no native helper
    return -1;
  }
}

/**
 * preadFull for a file opened without O_DIRECT: what the page cache holds is read at once on
 * the loop thread even when other requests are in flight, the rest through preadFull.
 */
export function preadBuffered(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  if (runsInline() || length === 0 || length > SMALL_BUFFERED) return preadFull(fd, buf, at, length, position);
  let n: number;
  try {
    n = readCached(fd, buf, at, length, position);
  } catch (err) {
    return Promise.reject(err);
  }
  if (n === length || n === 0) return Promise.resolve(n);
  if (n < 0) return preadFull(fd, buf, at, length, position);
  return preadFull(fd, buf, at + n, length - n, position + n).then((rest) => n + rest);
}
