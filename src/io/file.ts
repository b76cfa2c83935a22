/**
 * The `file` protocol driver: a host file or block device, with the host side of QEMU's cache
 * modes (O_DIRECT through aligned bounce buffers, fdatasync or no flush at all), preallocation
 * on growth, hole punching and SEEK_DATA/SEEK_HOLE block status, and QEMU-compatible locking.
 */
import fs from 'node:fs';
import type { CacheMode } from '../block/cache-mode.js';
import type { Alignment, BlockDriver, DriverCapabilities, Extent, WriteFlags, ZeroFlags } from '../block/driver.js';
import { fromSystemError, VdiskError } from '../block/errors.js';
import type { Preallocation } from '../block/preallocation.js';
import { alignedPool, BUFFER_ALIGNMENT } from './aligned.js';
import { probeDirectAlignment } from './dio-alignment.js';
import { alignDown, alignUp, DIRECT_CHUNK, DirectIo } from './direct-io.js';
import { GroupSync } from './group-sync.js';
import { acquireImageLock, forceShareRefused, permissionsFor } from './image-lock.js';
import { native } from './native.js';
import { fallocate, fdatasyncQuick, preadBuffered, pwriteBuffered } from './positioned-io.js';
import { closeFd, errnoCode, fstat, ftruncate, isUnsupported, openFd, refuseSpecialFile, unlink } from './posix.js';

export interface FileOpenOptions {
  filename: string;
  cache: CacheMode;
  readOnly: boolean;
  /** Create the file when it does not exist (an existing file is opened as it is). */
  create?: boolean;
  /** Take QEMU-compatible image locks (default true); false is like qemu-img -U. */
  lock?: boolean;
  /** Test seam: replaces fdatasync(2), to inject flush failures. */
  syncImpl?: (fd: number) => Promise<void>;
  /** Test seam: replaces open(2), to simulate filesystems without O_DIRECT. */
  openImpl?: (path: string, flags: number, mode: number) => Promise<number>;
}

/** Zero-writing chunk size (preallocation=full, write-zeroes fallback). */
const CHUNK = DIRECT_CHUNK;

let zeroChunk: Buffer | undefined;

export class FileDriver implements BlockDriver {
  readonly driverName = 'file';
  readonly filename: string;
  readonly readOnly: boolean;
  readonly cache: CacheMode;
  /** The host file descriptor (tests read its flags from /proc/self/fdinfo). */
  readonly fd: number;
  readonly isBlockDevice: boolean;
  /** Whether this driver holds QEMU-compatible image locks. */
  readonly locked: boolean;
  readonly capabilities: DriverCapabilities;
  readonly alignment: Alignment;

  /** Alignment fallocate needs: block devices insist on whole logical blocks even when buffered. */
  private readonly zeroAlign: number;
  private readonly direct: boolean;
  private readonly syncs: GroupSync;
  /** The O_DIRECT read/write path; undefined for buffered I/O. */
  private readonly dio: DirectIo | undefined;
  private len: number;
  private seekWorks: boolean;
  private inflight = 0;
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;

  private constructor(init: {
    filename: string;
    readOnly: boolean;
    cache: CacheMode;
    fd: number;
    size: number;
    blockSize: number;
    deviceBlockSize: number | undefined;
    locked: boolean;
    syncImpl: ((fd: number) => Promise<void>) | undefined;
  }) {
    this.filename = init.filename;
    this.readOnly = init.readOnly;
    this.cache = init.cache;
    this.fd = init.fd;
    this.len = init.size;
    this.locked = init.locked;
    this.direct = init.cache.direct;
    this.dio = this.direct
      ? new DirectIo(init.fd, init.blockSize, {
          get: () => this.len,
          grow: (end) => {
            if (end > this.len) this.len = end;
          },
        })
      : undefined;
    this.isBlockDevice = init.deviceBlockSize !== undefined;
    this.zeroAlign = Math.max(init.blockSize, init.deviceBlockSize ?? 1);
    this.seekWorks = !this.isBlockDevice;
    // Synced after every write (writethrough, directsync) or written around the page cache.
    const littleDirty = !init.cache.writeCache || init.cache.direct;
    const sync = init.syncImpl ?? ((fd: number) => fdatasyncQuick(fd, littleDirty));
    this.syncs = new GroupSync(init.filename, () => sync(init.fd));
    this.capabilities = { fua: true, discard: true, writeZeroes: true, blockStatus: true, resize: !this.isBlockDevice };
    this.alignment = { request: init.blockSize, memory: this.direct ? BUFFER_ALIGNMENT : 1 };
  }

  static async open(opts: FileOpenOptions): Promise<FileDriver> {
    const { filename, cache, readOnly } = opts;
    const c = fs.constants;
    const flags = (readOnly ? c.O_RDONLY : c.O_RDWR) | (cache.direct ? c.O_DIRECT : 0);
    if (opts.lock === false && !readOnly) throw forceShareRefused(filename);
    const openImpl = opts.openImpl ?? openFd;
    const openError = (err: unknown): VdiskError =>
      cache.direct && errnoCode(err) === 'EINVAL'
        ? new VdiskError(
            'ENOTSUP',
            `Could not open '${filename}': the filesystem does not support O_DIRECT (cache=${cache.name}); ` +
              'use a cache mode without O_DIRECT, such as writeback',
            { cause: err },
          )
        : fromSystemError(err, `Could not open '${filename}'`);
    await refuseSpecialFile(filename);
    let fd: number;
    try {
      fd = await openImpl(filename, flags, 0o644);
    } catch (err) {
      if (!(opts.create && !readOnly && errnoCode(err) === 'ENOENT')) throw openError(err);
      try {
        fd = await openImpl(filename, flags | c.O_CREAT | c.O_EXCL, 0o644);
      } catch (err2) {
        // O_EXCL succeeded in creating the file before O_DIRECT was refused: leave nothing behind.
        if (cache.direct && errnoCode(err2) === 'EINVAL') await unlink(filename).catch(() => {});
        throw openError(err2);
      }
    }

    try {
      const st = await fstat(fd);
      let size: number;
      let deviceBlockSize: number | undefined;
      if (st.isBlockDevice()) {
        const info = native().blockDeviceInfo(fd);
        if (!info) throw new VdiskError('EINVAL', `Could not open '${filename}': not a block device`);
        size = info.size;
        deviceBlockSize = info.logicalBlockSize;
      } else if (st.isFile()) {
        size = st.size;
      } else {
        throw new VdiskError('EINVAL', `Could not open '${filename}': not a regular file or block device`);
      }
      let blockSize = 1;
      if (cache.direct) blockSize = deviceBlockSize ?? (await probeDirectAlignment(fd, st));
      const locked = opts.lock !== false && acquireImageLock(fd, filename, permissionsFor(readOnly));
      return new FileDriver({
        filename,
        readOnly,
        cache,
        fd,
        size,
        blockSize,
        deviceBlockSize,
        locked,
        syncImpl: opts.syncImpl,
      });
    } catch (err) {
      await closeFd(fd).catch(() => {});
      throw err instanceof VdiskError ? err : fromSystemError(err, `Could not open '${filename}'`);
    }
  }

  length(): number {
    return this.len;
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    this.begin();
    try {
      if (this.dio) await this.dio.read(offset, buf);
      else {
        const n = await preadBuffered(this.fd, buf, 0, buf.length, offset);
        if (n < buf.length) buf.fill(0, n); // past EOF (a concurrent truncate) reads as zeros
      }
    } catch (err) {
      throw fromSystemError(err, `Could not read '${this.filename}' at ${offset}`);
    } finally {
      this.end();
    }
  }

  async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    this.begin();
    try {
      await this.writeAt(offset, buf);
      if (flags?.fua) await this.syncForFua();
    } catch (err) {
      throw fromSystemError(err, `Could not write to '${this.filename}' at ${offset}`);
    } finally {
      this.end();
    }
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    this.begin();
    try {
      await this.zeroes(offset, length, !!flags?.mayUnmap, !!flags?.noFallback);
      if (flags?.fua) await this.syncForFua();
    } catch (err) {
      throw fromSystemError(err, `Could not write zeroes to '${this.filename}' at ${offset}`);
    } finally {
      this.end();
    }
  }

  /** Punches a hole; a no-op where the host cannot (discard is a hint). Reads as zero afterwards. */
  async discard(offset: number, length: number): Promise<void> {
    this.begin();
    try {
      // Only whole blocks under O_DIRECT or on devices: partial blocks would need a write.
      const start = alignUp(offset, this.zeroAlign);
      const end = alignDown(Math.min(offset + length, this.len), this.zeroAlign);
      if (end <= start) return;
      const n = native();
      const hold = this.dio ? await this.dio.blocks.lock(start, end, false) : undefined;
      try {
        await fallocate(this.fd, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, start, end - start);
      } catch (err) {
        if (!isUnsupported(err)) throw err;
      } finally {
        if (hold) this.dio?.blocks.unlock(hold);
      }
    } catch (err) {
      throw fromSystemError(err, `Could not discard in '${this.filename}' at ${offset}`);
    } finally {
      this.end();
    }
  }

  async flush(): Promise<void> {
    this.begin();
    try {
      if (!this.cache.noFlush) await this.syncs.now();
    } finally {
      this.end();
    }
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    this.begin();
    try {
      if (offset >= this.len) return this.extent(offset, length, false);
      if (!this.seekWorks) return this.extent(offset, length, true);
      const n = native();
      let data: number;
      try {
        data = n.seekData(this.fd, offset);
      } catch (err) {
        if (errnoCode(err) !== 'EINVAL' && !isUnsupported(err)) throw err;
        this.seekWorks = false;
        return this.extent(offset, length, true);
      }
      if (data < 0 || data >= offset + length) return this.extent(offset, length, false);
      if (data > offset) return this.extent(offset, data - offset, false);
      const hole = n.seekHole(this.fd, offset);
      // A hole at `offset` here means a concurrent change: data is the answer that is never wrong.
      if (hole <= offset) return this.extent(offset, length, true);
      return this.extent(offset, Math.min(hole, offset + length) - offset, true);
    } catch (err) {
      throw fromSystemError(err, `Could not get block status of '${this.filename}' at ${offset}`);
    } finally {
      this.end();
    }
  }

  truncate(length: number, preallocation: Preallocation): Promise<void> {
    return this.truncateWithProgress(length, preallocation);
  }

  /** truncate, reporting (bytes done, bytes total) as 'full' preallocation writes zeros. */
  async truncateWithProgress(
    length: number,
    preallocation: Preallocation,
    onProgress?: (done: number, total: number) => void,
  ): Promise<void> {
    this.begin();
    try {
      if (preallocation === 'metadata') {
        throw new VdiskError('EINVAL', `Preallocation mode 'metadata' is not supported by the file driver`);
      }
      if (this.isBlockDevice) {
        if (length !== this.len) throw new VdiskError('ENOTSUP', `Cannot resize device '${this.filename}'`);
        return;
      }
      const old = this.len;
      if (length <= old || preallocation === 'off') {
        await ftruncate(this.fd, length);
        this.len = length;
        return;
      }
      try {
        if (preallocation === 'falloc') {
          await native().fallocate(this.fd, 0, old, length - old);
          onProgress?.(length - old, length - old);
        } else {
          await this.writeZeroBytes(old, length - old, (done) => onProgress?.(done, length - old));
        }
        this.len = length;
      } catch (err) {
        await ftruncate(this.fd, old).catch(() => {}); // leave the file as it was
        this.len = old;
        throw fromSystemError(err, `Could not preallocate new data in '${this.filename}'`);
      }
    } catch (err) {
      throw fromSystemError(err, `Could not resize '${this.filename}'`);
    } finally {
      this.end();
    }
  }

  async allocatedSize(): Promise<number | undefined> {
    this.begin();
    try {
      return (await fstat(this.fd)).blocks * 512;
    } catch (err) {
      throw fromSystemError(err, `Could not stat '${this.filename}'`);
    } finally {
      this.end();
    }
  }

  /** Waits for requests in flight, then closes the file (which drops the image locks). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      try {
        await closeFd(this.fd);
      } catch (err) {
        throw fromSystemError(err, `Could not close '${this.filename}'`);
      }
    })();
    return this.closing;
  }

  // --- request bookkeeping ---

  private begin(): void {
    if (this.closing) throw new VdiskError('ESHUTDOWN', `'${this.filename}' is closed`);
    this.inflight++;
  }

  private end(): void {
    if (--this.inflight === 0 && this.drained) this.drained();
  }

  private extent(offset: number, length: number, data: boolean): Extent {
    return { offset, length, allocated: true, data, zero: !data, hostOffset: offset, hostFile: this.filename };
  }

  // --- durability ---

  /** FUA as a flush after the write; cache=unsafe ignores it as QEMU does. */
  private syncForFua(): Promise<void> | undefined {
    return this.cache.noFlush ? undefined : this.syncs.now();
  }

  // --- reads and writes ---

  /** Writes without flags or error wrapping; keeps the cached length. */
  private async writeAt(offset: number, buf: Buffer): Promise<void> {
    const end = offset + buf.length;
    try {
      if (this.dio) return await this.dio.write(offset, buf);
      await pwriteBuffered(this.fd, buf, 0, buf.length, offset);
    } catch (err) {
      // Part of it may have landed: past the old end, the file no longer reads as zeros there.
      if (end > this.len) this.len = end;
      throw err;
    }
    if (end > this.len) this.len = end;
  }

  // --- zeroing ---

  private async zeroes(offset: number, length: number, mayUnmap: boolean, noFallback: boolean): Promise<void> {
    const end = offset + length;
    const a = Math.min(alignUp(offset, this.zeroAlign), end);
    const b = Math.max(alignDown(end, this.zeroAlign), a);
    // Partial blocks at either end are written as zero bytes (a read-modify-write under O_DIRECT).
    if (a > offset) await this.writeZeroBytes(offset, a - offset);
    if (b > a) await this.zeroBlocks(a, b, mayUnmap, noFallback);
    if (end > b) await this.writeZeroBytes(b, end - b);
  }

  /** Zeroes [a, b) (aligned to zeroAlign) with fallocate, falling back to writing zeros. */
  private async zeroBlocks(a: number, b: number, mayUnmap: boolean, noFallback: boolean): Promise<void> {
    const n = native();
    const hold = this.dio ? await this.dio.blocks.lock(a, b, false) : undefined;
    let done = false;
    try {
      const inFile = Math.min(b, this.len);
      const punch = n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE;
      if (mayUnmap && inFile >= b && (await this.tryFallocate(punch, a, b - a))) done = true;
      // ZERO_RANGE without KEEP_SIZE also grows the file when the range ends past EOF.
      else if (await this.tryFallocate(n.FALLOC_FL_ZERO_RANGE, a, b - a)) done = true;
      // No ZERO_RANGE (tmpfs): punch, then reserve the space again unless unmapping is allowed.
      else if (inFile >= b && (await this.tryFallocate(punch, a, b - a))) {
        if (!mayUnmap) await this.tryFallocate(0, a, b - a);
        done = true;
      }
    } finally {
      if (hold) this.dio?.blocks.unlock(hold);
    }
    if (done) {
      if (b > this.len) this.len = b;
      return;
    }
    if (noFallback) {
      throw new VdiskError('ENOTSUP', `'${this.filename}' cannot write zeroes without writing zero bytes`);
    }
    await this.writeZeroBytes(a, b - a);
  }

  /** fallocate that answers false when the host cannot do this mode. */
  private async tryFallocate(mode: number, offset: number, length: number): Promise<boolean> {
    try {
      await fallocate(this.fd, mode, offset, length);
      return true;
    } catch (err) {
      if (isUnsupported(err)) return false;
      throw err;
    }
  }

  /** Writes zero bytes over [offset, offset+length) in large chunks. */
  private async writeZeroBytes(offset: number, length: number, onChunk?: (done: number) => void): Promise<void> {
    let zeros: Buffer;
    if (this.direct) {
      zeros = alignedPool.acquire(Math.min(CHUNK, alignUp(length, BUFFER_ALIGNMENT)));
      zeros.fill(0);
    } else {
      zeroChunk ??= Buffer.alloc(CHUNK);
      zeros = zeroChunk;
    }
    try {
      for (let done = 0; done < length; ) {
        // The first chunk ends page-aligned, so that later chunks need no read-modify-write.
        const n = Math.min(zeros.length - ((offset + done) % BUFFER_ALIGNMENT), length - done);
        await this.writeAt(offset + done, n === zeros.length ? zeros : zeros.subarray(0, n));
        done += n;
        onChunk?.(done);
      }
    } finally {
      if (this.direct) alignedPool.release(zeros);
    }
  }
}
