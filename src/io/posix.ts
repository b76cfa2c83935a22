/**
 * Promise wrappers over Node's callback fs API on raw file descriptors. The callback API is used
 * (not fs.promises/FileHandle) because it is the cheapest path per request, and this is the hot
 * path of every read and write.
 */
import fs from 'node:fs';
import { VdiskError } from '../block/errors.js';

export function openFd(path: string, flags: number, mode: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

export function pread(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

export function pwrite(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<number> {
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
export async function pwriteFull(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const n = await pwrite(fd, buf, at + done, length - done, position + done);
    if (n === 0) throw Object.assign(new Error('pwrite wrote nothing'), { code: 'EIO' });
    done += n;
  }
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

export function ftruncate(fd: number, length: number): Promise<void> {
  return new Promise((resolve, reject) => fs.ftruncate(fd, length, (err) => (err ? reject(err) : resolve())));
}

export function fstat(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

export function unlink(path: string): Promise<void> {
  return new Promise((resolve, reject) => fs.unlink(path, (err) => (err ? reject(err) : resolve())));
}

/** The errno name of a Node or native-helper error ('' when there is none). */
export function errnoCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** Errors that mean "this filesystem or device cannot do that operation". */
export function isUnsupported(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS' || code === 'ENOTTY';
}

/**
 * Refuses a path that exists and is neither a regular file nor a block device, before open():
 * opening a FIFO would wait for a writer that may never come.
 */
export async function refuseSpecialFile(path: string): Promise<void> {
  const st = await fs.promises.stat(path).catch(() => undefined);
  if (st && !st.isFile() && !st.isBlockDevice()) {
    throw new VdiskError('EINVAL', `Could not open '${path}': not a regular file or block device`);
  }
}
