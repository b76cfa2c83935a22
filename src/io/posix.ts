/**
 * Promise wrappers over Node's callback fs API on raw file descriptors (positioned reads and
 * writes, the hot path, are in positioned-io.ts).
 */
import fs from 'node:fs';
import { VdiskError } from '../block/errors.js';

export function openFd(path: string, flags: number, mode: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
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
