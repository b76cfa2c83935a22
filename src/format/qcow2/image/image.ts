/**
 * An open qcow2 image as a block driver: requests go to the request paths (reader, writer,
 * deallocator, resizer, compressed writer); flush writes the metadata caches in their declared
 * order, then syncs the file.
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  NodeDescription,
  PersistentBitmaps,
  ZeroFlags,
} from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { Preallocation } from '../../../block/preallocation.js';
import type { Mutex } from '../../../util/mutex.js';
import type { RangeLock } from '../../../util/range-lock.js';
import { INCOMPAT_DIRTY } from '../codec/constants.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { SnapshotManager } from '../snapshot/manager.js';
import type { BlockStatus } from './block-status.js';
import type { CompressedWriter } from './compressed-writer.js';
import type { Deallocator } from './deallocator.js';
import type { GuestReader } from './guest-reader.js';
import type { GuestWriter } from './guest-writer.js';
import type { HeaderStore } from './header-store.js';
import type { L2Tables } from './l2-tables.js';
import type { Qcow2Bitmaps } from './qcow2-bitmaps.js';
import type { Refcounts } from './refcounts.js';
import type { Resizer } from './resizer.js';

/** What the driver works with: the state owners it flushes and describes, and the request paths. */
export interface Qcow2ImageDeps {
  file: BlockDriver;
  backing: BlockDriver | undefined;
  geometry: Qcow2Geometry;
  header: HeaderStore;
  tables: L2Tables;
  refcounts: Refcounts;
  status: BlockStatus;
  reader: GuestReader;
  writer: GuestWriter;
  deallocator: Deallocator;
  resizer: Resizer;
  compressed: CompressedWriter;
  snapshots: SnapshotManager;
  bitmaps: Qcow2Bitmaps;
  metadataLock: Mutex;
  clusterLocks: RangeLock;
}

/** Guest clusters makeEmpty drops per step. */
const EMPTY_STEP_CLUSTERS = 65536;

export interface Qcow2ImageOptions {
  readOnly: boolean;
  backingName?: string;
  backingFormat?: string;
}

export class Qcow2Image implements BlockDriver {
  readonly driverName = 'qcow2';
  readonly readOnly: boolean;
  readonly #d: Qcow2ImageDeps;
  readonly #backingName: string | undefined;
  readonly #backingFormat: string | undefined;
  #closing: Promise<void> | undefined;
  #firstWrite: Promise<void> | undefined;

  constructor(deps: Qcow2ImageDeps, options: Qcow2ImageOptions) {
    this.#d = deps;
    this.readOnly = options.readOnly;
    this.#backingName = options.backingName;
    this.#backingFormat = options.backingFormat;
  }

  describe(): NodeDescription {
    const h = this.#d.header;
    return {
      format: 'qcow2',
      clusterSize: this.#d.geometry.clusterSize,
      dirty: h.dirty,
      corrupt: h.corrupt,
      backing:
        this.#backingName === undefined
          ? undefined
          : { name: this.#backingName, format: this.#backingFormat, node: this.#d.backing },
      snapshots: this.#d.snapshots.list(),
      bitmaps: this.#d.bitmaps.list(),
      formatSpecific: this.#formatSpecific(),
    };
  }

  /** The internal snapshots: list, create, apply, delete (qcow2's own, not a BlockDriver method). */
  get snapshots(): SnapshotManager {
    return this.#d.snapshots;
  }

  /** What happens once before the image's first change: the snapshot operations call it too. */
  beforeChange(): Promise<void> {
    return this.#beforeWrite();
  }

  get filename(): string | undefined {
    return this.#d.file.filename;
  }

  get capabilities(): DriverCapabilities {
    return { fua: false, discard: true, writeZeroes: true, blockStatus: true, resize: true };
  }

  get alignment(): Alignment {
    return { request: 1, memory: this.#d.file.alignment.memory };
  }

  length(): number {
    return this.#d.header.header.size;
  }

  read(offset: number, buf: Buffer): Promise<void> {
    return this.#d.reader.read(offset, buf);
  }

  persistentBitmaps(): PersistentBitmaps {
    return this.#d.bitmaps;
  }

  async write(offset: number, buf: Buffer): Promise<void> {
    await this.#beforeWrite();
    // The bits are set even when the write fails, as QEMU sets them: the range may have changed.
    try {
      await this.#d.writer.write(offset, buf);
    } finally {
      await this.#d.bitmaps.markDirty(offset, buf.length);
    }
  }

  async writeZeroes(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    await this.#beforeWrite();
    try {
      await this.#zeroes(offset, length, flags);
    } finally {
      await this.#d.bitmaps.markDirty(offset, length);
    }
  }

  async #zeroes(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const mode = flags.mayUnmap ? 'zero-unmap' : 'zero-keep';
    await this.#wholeClusters(offset, length, mode, async (from, len) => {
      if (flags.noFallback && !(await this.#readsAsZero(from, len))) {
        throw new VdiskError('ENOTSUP', 'Zeroing part of a cluster needs a data write');
      }
      const chunk = Buffer.alloc(Math.min(len, 1 << 20));
      for (let pos = from; pos < from + len; pos += chunk.length) {
        await this.#d.writer.write(pos, chunk.subarray(0, Math.min(chunk.length, from + len - pos)));
      }
    });
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.#beforeWrite();
    // Partial clusters are left alone: discard is a hint.
    try {
      await this.#wholeClusters(offset, length, 'discard', async () => {});
    } finally {
      await this.#d.bitmaps.markDirty(offset, length);
    }
  }

  async makeEmpty(): Promise<void> {
    // In steps, so that the clusters to free stay a bounded list; each step is consistent alone.
    const step = EMPTY_STEP_CLUSTERS * this.#d.geometry.clusterSize;
    for (let offset = 0; offset < this.length(); offset += step) {
      await this.unallocate(offset, Math.min(step, this.length() - offset));
    }
  }

  /**
   * Makes the whole clusters of a range unallocated in this layer (it then reads from the
   * backing file, or as zeros without one); partial clusters are left alone.
   */
  async unallocate(offset: number, length: number): Promise<void> {
    await this.#beforeWrite();
    await this.#wholeClusters(offset, length, 'forget', async () => {});
  }

  async writeCompressed(offset: number, buf: Buffer): Promise<void> {
    await this.#beforeWrite();
    try {
      await this.#d.compressed.write(offset, buf);
    } finally {
      await this.#d.bitmaps.markDirty(offset, buf.length);
    }
  }

  async flush(): Promise<void> {
    const { tables, refcounts } = this.#d;
    // R6 (docs/architecture.md). L2 tables first: their declared dependency writes the refcount
    // blocks before them. Tables are written under the lock; the final sync runs outside it, so
    // requests (and other flushes) are not held up behind fdatasync. It still covers everything
    // completed before this flush began.
    await this.#d.metadataLock.run(async () => {
      await tables.writeBack();
      await refcounts.writeBack();
    });
    await this.#d.file.flush();
  }

  blockStatus(offset: number, length: number): Promise<Extent> {
    return this.#d.status.first(offset, length);
  }

  blockStatusMany(offset: number, length: number): Promise<Extent[]> {
    return this.#d.status.many(offset, length);
  }

  async truncate(length: number, preallocation: Preallocation): Promise<void> {
    this.#d.bitmaps.checkResizable();
    await this.#beforeWrite();
    await this.#d.resizer.resize(length, preallocation);
    await this.#d.bitmaps.resize(length);
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async allocatedSize(): Promise<number | undefined> {
    return this.#d.file.allocatedSize?.();
  }

  #formatSpecific(): { type: string; data: Record<string, unknown> } {
    const h = this.#d.header.header;
    const g = this.#d.geometry;
    // What QEMU reports: a v2 image has no lazy refcounts, corrupt bit or extended L2 to show.
    const data: Record<string, unknown> = { compat: h.version === 3 ? '1.1' : '0.10' };
    data['compression-type'] = h.compressionType === 1 ? 'zstd' : 'zlib';
    if (h.version === 3) data['lazy-refcounts'] = this.#d.header.lazyRefcounts;
    data['refcount-bits'] = g.refcountBits;
    const bitmaps = this.#d.bitmaps.list();
    if (bitmaps.length > 0) {
      data.bitmaps = bitmaps.map((b) => ({ name: b.name, granularity: b.granularity, flags: b.flags }));
    }
    if (h.version === 3) {
      data.corrupt = this.#d.header.corrupt;
      data['extended-l2'] = g.extendedL2;
    }
    return { type: 'qcow2', data };
  }

  async #close(): Promise<void> {
    const { file, backing, header } = this.#d;
    try {
      if (!this.readOnly) {
        await this.flush();
        // The bitmaps go to new clusters; their refcounts, and the frees, are flushed after.
        if (await this.#d.metadataLock.run(() => this.#d.bitmaps.store())) await this.flush();
        if (header.dirty) await header.setIncompatible(INCOMPAT_DIRTY, false);
      }
    } finally {
      await file.close();
      await backing?.close();
    }
  }

  /**
   * Before the first change: mark the bitmaps in use (and clear the autoclear bits we do not
   * maintain), mark dirty for lazy refcounts (R7).
   */
  #beforeWrite(): Promise<void> {
    if (this.readOnly) return Promise.reject(new VdiskError('EROFS', 'The image is opened read-only'));
    this.#firstWrite ??= (async () => {
      const header = this.#d.header;
      await this.#d.bitmaps.activate();
      if (header.lazyRefcounts) await header.setIncompatible(INCOMPAT_DIRTY, true);
    })();
    return this.#firstWrite;
  }

  async #readsAsZero(offset: number, length: number): Promise<boolean> {
    const buf = Buffer.alloc(length);
    await this.read(offset, buf);
    return buf.every((b) => b === 0);
  }

  /** Whole clusters go to the deallocator; partial head and tail to `partial`. */
  async #wholeClusters(
    offset: number,
    length: number,
    mode: 'discard' | 'zero-unmap' | 'zero-keep' | 'forget',
    partial: (offset: number, length: number) => Promise<void>,
  ): Promise<void> {
    const cs = this.#d.geometry.clusterSize;
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
    const release = await this.#d.clusterLocks.acquire(first, first + count, 'exclusive');
    let done: boolean;
    try {
      done = await this.#d.deallocator.deallocate(first, count, mode);
    } finally {
      release();
    }
    if (!done) await partial(alignedStart, Math.min(alignedEnd, size) - alignedStart);
    if (alignedEnd < end) await partial(alignedEnd, end - alignedEnd);
  }
}
