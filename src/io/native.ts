/**
 * Typed access to the small N-API addon (native/vdisk_native.cc): the Linux calls Node lacks.
 * Loaded on first use so that modules which never touch a host file work without the build.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { VdiskError } from '../block/errors.js';

export type LockKind = 'read' | 'write' | 'unlock';

export interface BlockDeviceInfo {
  /** Device size in bytes (BLKGETSIZE64). */
  size: number;
  /** Logical sector size in bytes (BLKSSZGET): the O_DIRECT alignment. */
  logicalBlockSize: number;
}

export interface NativeHelpers {
  /** fallocate(2) on the libuv pool; rejects with an Error whose code is the errno name. */
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  /** fallocate(2) on the calling thread (small ranges only); throws like fallocate. */
  fallocateNow(fd: number, mode: number, offset: number, length: number): void;
  /** lseek(SEEK_DATA): the next data offset at or after `offset`, or -1 when there is none (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): the next hole at or after `offset` (EOF counts as a hole), or -1 past EOF. */
  seekHole(fd: number, offset: number): number;
  /** Size and logical block size of a block device; null for anything else. */
  blockDeviceInfo(fd: number): BlockDeviceInfo | null;
  /** F_OFD_SETLK; throws an EAGAIN/EACCES-coded Error when another open file description conflicts. */
  lock(fd: number, start: number, length: number, kind: LockKind): void;
  /** F_OFD_GETLK: true when another open file description holds a lock that conflicts with `kind`. */
  testLock(fd: number, start: number, length: number, kind: 'read' | 'write'): boolean;
  /** linkat of the open file `fd` to `path` (AT_SYMLINK_FOLLOW through /proc/self/fd); EEXIST if taken. */
  linkFd(fd: number, path: string): void;
  /**
   * preadv2(RWF_NOWAIT) on the calling thread: the bytes the page cache holds now (0 at end of
   * file), or -1 when the read would wait for the disk. Throws EOPNOTSUPP where unsupported.
   */
  readCached(fd: number, buf: Buffer, at: number, length: number, position: number): number;
  /** posix_fadvise(POSIX_FADV_DONTNEED): drops the range's clean pages from the page cache (length 0: to the end). */
  fadviseDontNeed(fd: number, offset: number, length: number): void;
  /** One zstd frame of `plain` (default level), or null when it needs more than `capacity` bytes. */
  zstdCompress(plain: Buffer, capacity: number): Buffer | null;
  /** The first `size` bytes `stored` inflates to; throws when the stream does not end exactly there. */
  zstdDecompress(stored: Buffer, size: number): Buffer;
  /** open(2)'s O_TMPFILE for this architecture (Node's fs.constants lacks it). */
  readonly O_TMPFILE: number;
  readonly FALLOC_FL_KEEP_SIZE: number;
  readonly FALLOC_FL_PUNCH_HOLE: number;
  readonly FALLOC_FL_ZERO_RANGE: number;
}

const ADDON = 'build/Release/vdisk_native.node';
let loaded: NativeHelpers | undefined;

/** The addon, built by `npm install` (node-gyp) at the package root. */
export function native(): NativeHelpers {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  // src/io/ (run from source) is two levels below the root, dist/src/io/ three.
  const candidates = [new URL(`../../../${ADDON}`, import.meta.url), new URL(`../../${ADDON}`, import.meta.url)];
  const found = candidates.find((url) => existsSync(url));
  if (!found) {
    throw new VdiskError('ENOTSUP', `The native helper ${ADDON} is not built; run 'npm install' (needs g++ and make)`);
  }
  loaded = require(fileURLToPath(found)) as NativeHelpers;
  return loaded;
}
