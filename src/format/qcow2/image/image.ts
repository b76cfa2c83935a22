/**
 * An open qcow2 image as a block driver: requests are cut into the parts' paths (read, write,
 * deallocate); flush writes the metadata caches in their declared order, then syncs the file.
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  NodeDescription,
  SnapshotInfo,
  ZeroFlags,
} from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { Preallocation } from '../../../block/preallocation.js';
import { writeCompressedCluster } from './compressed-writer.js';
import { deallocateClusters } from './deallocator.js';
import { readGuest } from './guest-reader.js';
import { writeGuest } from './guest-writer.js';
import { INCOMPATIBLE_DIRTY } from './header-store.js';
import { mapRange } from './mapping.js';
import type { ImageParts } from './parts.js';
import { resizeImage } from './resizer.js';

export class Qcow2Image implements BlockDriver {
  readonly driverName = 'qcow2';
  readonly parts: ImageParts;
  readonly readOnly: boolean;
  readonly #backingName: string | undefined;
  readonly #backingFormat: string | undefined;
  readonly #snapshots: readonly SnapshotInfo[];
  #closing: Promise<void> | undefined;
  #firstWrite: Promise<void> | undefined;

  constructor(
    parts: ImageParts,
    options: { readOnly: boolean; backingName?: string; backingFormat?: string; snapshots?: readonly SnapshotInfo[] },
  ) {
    this.parts = parts;
    this.readOnly = options.readOnly;
    this.#backingName = options.backingName;
    this.#backingFormat = options.backingFormat;
    this.#snapshots = options.snapshots ?? [];
  }

  describe(): NodeDescription {
    const h = this.parts.header;
    return {
      format: 'qcow2',
      clusterSize: this.parts.geometry.clusterSize,
      dirty: h.dirty,
      corrupt: h.corrupt,
      backing:
        this.#backingName === undefined
          ? undefined
          : { name: this.#backingName, format: this.#backingFormat, node: this.parts.backing },
      snapshots: [...this.#snapshots],
      formatSpecific: this.#formatSpecific(),
    };
  }

  get filename(): string | undefined {
    return this.parts.file.filename;
  }

  get capabilities(): DriverCapabilities {
    return { fua: false, discard: true, writeZeroes: true, blockStatus: true, resize: true };
  }

  get alignment(): Alignment {
    return { request: 1, memory: this.parts.file.alignment.memory };
  }

  length(): number {
    return this.parts.header.header.size;
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    const g = this.parts.geometry;
    const first = Math.floor(offset / g.clusterSize);
    const end = Math.ceil((offset + buf.length) / g.clusterSize);
    const locks = this.parts.clusterLocks;
    const release = locks.tryAcquire(first, end, 'shared') ?? (await locks.acquire(first, end, 'shared'));
    try {
      await readGuest(this.parts, offset, buf);
    } finally {
      release();
    }
  }

  async write(offset: number, buf: Buffer): Promise<void> {
    await this.#beforeWrite();
    await writeGuest(this.parts, offset, buf);
  }

  async writeZeroes(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    await this.#beforeWrite();
    const mode = flags.mayUnmap ? 'zero-unmap' : 'zero-keep';
    await this.#wholeClusters(offset, length, mode, async (from, len) => {
      if (flags.noFallback && !(await this.#readsAsZero(from, len))) {
        throw new VdiskError('ENOTSUP', 'Zeroing part of a cluster needs a data write');
      }
      const chunk = Buffer.alloc(Math.min(len, 1 << 20));
      for (let pos = from; pos < from + len; pos += chunk.length) {
        await writeGuest(this.parts, pos, chunk.subarray(0, Math.min(chunk.length, from + len - pos)));
      }
    });
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.#beforeWrite();
    // Partial clusters are left alone: discard is a hint.
    await this.#wholeClusters(offset, length, 'discard', async () => {});
  }

  async writeCompressed(offset: number, buf: Buffer): Promise<void> {
    await this.#beforeWrite();
    await writeCompressedCluster(this.parts, offset, buf);
  }

  async flush(): Promise<void> {
    const p = this.parts;
    // Tables are written in their declared order under the lock; the final sync runs outside
    // it, so requests (and other flushes) are not held up behind fdatasync. It still covers
    // everything completed before this flush began.
    await p.metadataLock.run(async () => {
      await p.l2Cache.writeBack();
      await p.refcountCache.writeBack();
    });
    await p.file.flush();
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    const g = this.parts.geometry;
    // Ask for at most a few L2 tables' worth at once; callers loop.
    const span = Math.min(length, g.l2Coverage - (offset % g.l2Coverage));
    const runs = await this.parts.metadataLock.run(() => mapRange(this.parts.tables, g, offset, span));
    const run = runs[0]!;
    if (run.kind === 'unallocated' && this.parts.backing) {
      const below = await this.parts.backing.blockStatus(
        offset,
        Math.min(run.length, this.parts.backing.length() - offset),
      );
      if (offset < this.parts.backing.length()) {
        return { ...below, offset, depth: (below.depth ?? 0) + 1 };
      }
    }
    return {
      offset,
      length: run.length,
      allocated: run.kind !== 'unallocated',
      zero: run.kind === 'zero' || (run.kind === 'unallocated' && !this.parts.backing),
      data: run.kind === 'data' || run.kind === 'compressed',
      hostOffset: run.kind === 'data' ? run.host : undefined,
      hostFile: run.kind === 'data' ? this.parts.file.filename : undefined,
      compressed: run.kind === 'compressed',
      depth: 0,
    };
  }

  async truncate(length: number, preallocation: Preallocation): Promise<void> {
    await this.#beforeWrite();
    await resizeImage(this.parts, length, preallocation);
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async allocatedSize(): Promise<number | undefined> {
    return this.parts.file.allocatedSize?.();
  }

  #formatSpecific(): { type: string; data: Record<string, unknown> } {
    const h = this.parts.header.header;
    const g = this.parts.geometry;
    // What QEMU reports: a v2 image has no lazy refcounts, corrupt bit or extended L2 to show.
    const data: Record<string, unknown> = { compat: h.version === 3 ? '1.1' : '0.10' };
    data['compression-type'] = h.compressionType === 1 ? 'zstd' : 'zlib';
    if (h.version === 3) data['lazy-refcounts'] = this.parts.lazyRefcounts;
    data['refcount-bits'] = g.refcountBits;
    if (h.version === 3) {
      data.corrupt = this.parts.header.corrupt;
      data['extended-l2'] = g.extendedL2;
    }
    return { type: 'qcow2', data };
  }

  async #close(): Promise<void> {
    const p = this.parts;
    try {
      if (!this.readOnly) {
        await this.flush();
        if (p.header.dirty) await p.header.setIncompatible(INCOMPATIBLE_DIRTY, false);
      }
    } finally {
      await p.file.close();
      await p.backing?.close();
    }
  }

  /** Before the first change: clear autoclear bits we do not maintain, mark dirty for lazy refcounts (R7). */
  #beforeWrite(): Promise<void> {
    if (this.readOnly) return Promise.reject(new VdiskError('EROFS', 'The image is opened read-only'));
    this.#firstWrite ??= (async () => {
      await this.parts.header.clearAutoclear();
      if (this.parts.lazyRefcounts) await this.parts.header.setIncompatible(INCOMPATIBLE_DIRTY, true);
    })();
    return this.#firstWrite;
  }

  async #readsAsZero(offset: number, length: number): Promise<boolean> {
    const buf = Buffer.alloc(length);
    await this.read(offset, buf);
    return buf.every((b) => b === 0);
  }

  /** Whole clusters go to deallocateClusters; partial head and tail to `partial`. */
  async #wholeClusters(
    offset: number,
    length: number,
    mode: 'discard' | 'zero-unmap' | 'zero-keep',
    partial: (offset: number, length: number) => Promise<void>,
  ): Promise<void> {
    const cs = this.parts.geometry.clusterSize;
    const end = offset + length;
    const size = this.length();
    const alignedStart = Math.ceil(offset / cs) * cs;
    // The last cluster counts as whole when the range reaches the image's end.
    const alignedEnd = end === size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
    if (alignedStart >= alignedEnd) {
      await partial(offset, length);
      return;
    }
    if (offset < alignedStart) await partial(offset, alignedStart - offset);
    const first = alignedStart / cs;
    const count = (alignedEnd - alignedStart) / cs;
    const release = await this.parts.clusterLocks.acquire(first, first + count, 'exclusive');
    let done: boolean;
    try {
      done = await deallocateClusters(this.parts, first, count, mode);
    } finally {
      release();
    }
    if (!done) await partial(alignedStart, Math.min(alignedEnd, size) - alignedStart);
    if (alignedEnd < end) await partial(alignedEnd, end - alignedEnd);
  }
}
