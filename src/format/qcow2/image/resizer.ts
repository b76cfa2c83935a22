/**
 * Changing the virtual size of an open qcow2 image. Growing makes the L1 table big enough
 * first (staged, R5 in docs/architecture.md), then preallocates the new tail as asked, then
 * writes the new size. Shrinking frees every cluster past the new end, writes the new size, then
 * cuts the host file after its last cluster in use.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { Preallocation } from '../../../block/preallocation.js';
import type { Mutex } from '../../../util/mutex.js';
import type { RangeLock } from '../../../util/range-lock.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { L2Entry } from '../codec/l2-entry.js';
import type { Allocator } from './allocator.js';
import type { Deallocator } from './deallocator.js';
import type { HeaderStore } from './header-store.js';
import type { L2Tables } from './l2-tables.js';
import type { Refcounts } from './refcounts.js';

export interface ResizerDeps {
  file: BlockDriver;
  geometry: Qcow2Geometry;
  hasBacking: boolean;
  header: HeaderStore;
  tables: L2Tables;
  allocator: Allocator;
  refcounts: Refcounts;
  deallocator: Deallocator;
  metadataLock: Mutex;
  clusterLocks: RangeLock;
}

export class Resizer {
  readonly #d: ResizerDeps;

  constructor(deps: ResizerDeps) {
    this.#d = deps;
  }

  async resize(size: number, preallocation: Preallocation): Promise<void> {
    const g = this.#d.geometry;
    const header = this.#d.header;
    const old = header.header.size;
    if (size % 512 !== 0) throw new VdiskError('EINVAL', 'The new size must be a multiple of 512');
    // A v2 snapshot may not record its disk size: QEMU refuses any resize (even to the same size).
    if (g.version < 3 && header.header.nbSnapshots > 0) {
      throw new VdiskError('ENOTSUP', "Can't resize a v2 image which has snapshots");
    }
    if (size === old) return;
    if (size < old) {
      if (preallocation !== 'off') throw new VdiskError('ENOTSUP', 'Preallocation is only for growing an image');
      const first = Math.ceil(size / g.clusterSize);
      const end = Math.ceil(old / g.clusterSize);
      if (end > first) {
        const release = await this.#d.clusterLocks.acquire(first, end, 'exclusive');
        try {
          await this.#d.deallocator.deallocate(first, end - first, 'forget');
          // As QEMU: L2 tables past the new end and refcount blocks left counting nothing go too.
          await this.#d.metadataLock.run(async () => {
            await this.#d.tables.shrinkL1(Math.ceil(size / g.l2Coverage));
            await this.#d.allocator.dropUnusedRefblocks();
          });
        } finally {
          release();
        }
      }
      await this.#d.metadataLock.run(() => header.setSize(size));
      await this.#cutFileTail();
      return;
    }
    if (this.#d.hasBacking && preallocation !== 'off') {
      throw new VdiskError('ENOTSUP', 'Preallocation of an image with a backing file is not supported');
    }
    const entries = Math.ceil(size / g.l2Coverage);
    await this.#d.metadataLock.run(async () => {
      await this.#d.tables.growL1(entries);
      // Flush so the tables are durable before the size makes them reachable.
      await this.#d.tables.flush();
    });
    if (preallocation !== 'off') await this.#preallocateTail(old, size, preallocation);
    await this.#d.metadataLock.run(() => header.setSize(size));
  }

  /**
   * Cuts the host file after its last cluster in use, as qemu-img does after a shrink. The
   * tables and refcounts are durable first (R4), so nothing on disk names the cut tail; allocation
   * holds the metadata lock, so no cluster is handed out past the cut meanwhile.
   */
  async #cutFileTail(): Promise<void> {
    const { file, geometry: g, tables, allocator, refcounts } = this.#d;
    if (!file.capabilities.resize) return;
    await this.#d.metadataLock.run(async () => {
      await tables.flush();
      await allocator.flushRefcounts();
      const last = await refcounts.lastInUse(Math.ceil(file.length() / g.clusterSize));
      const end = (last + 1) * g.clusterSize;
      if (last >= 0 && end < file.length()) await file.truncate(end, 'off');
    });
  }

  /** Maps every cluster of [from, to) to a host cluster that reads as zeros. */
  async #preallocateTail(from: number, to: number, mode: Preallocation): Promise<void> {
    const g = this.#d.geometry;
    const first = Math.ceil(from / g.clusterSize);
    const end = Math.ceil(to / g.clusterSize);
    if (first >= end) return;
    const release = await this.#d.clusterLocks.acquire(first, end, 'exclusive');
    try {
      await this.#d.metadataLock.run(async () => {
        for (let c = first; c < end; ) {
          // One L2 table at a time, its clusters allocated in one contiguous run.
          const n = Math.min(end - c, g.l2Entries - (c % g.l2Entries));
          const host = await this.#d.allocator.allocate(n);
          await this.#zeroHostRun(host, n * g.clusterSize, mode);
          const entries: L2Entry[] = Array.from({ length: n }, (_, i) => ({
            kind: 'data',
            host: host + i * g.clusterSize,
            copied: true,
            ...(g.extendedL2 ? { sub: { alloc: 0xffffffff, zero: 0 } } : {}),
          }));
          await this.#d.tables.setEntries(c, entries);
          c += n;
        }
        await this.#d.tables.flush();
      });
    } finally {
      release();
    }
  }

  /**
   * Makes a run of newly allocated host clusters read as zeros, the way `mode` asks. Only writes
   * and fallocate are used, never ftruncate, so a concurrent write past the end is never cut off.
   */
  async #zeroHostRun(host: number, length: number, mode: Preallocation): Promise<void> {
    const file = this.#d.file;
    if (mode === 'full') {
      const zeros = Buffer.alloc(Math.min(length, 4 << 20));
      for (let pos = 0; pos < length; pos += zeros.length) {
        await file.write(host + pos, zeros.subarray(0, Math.min(zeros.length, length - pos)));
      }
    } else if (mode === 'falloc') {
      await file.writeZeroes(host, length, { mayUnmap: false });
    } else {
      // metadata: a hole inside the file, and past its end a sparse extension.
      const inside = Math.max(0, Math.min(length, file.length() - host));
      if (inside > 0) await file.writeZeroes(host, inside, { mayUnmap: true });
      if (inside < length) await file.write(host + length - 512, Buffer.alloc(512));
    }
  }
}
