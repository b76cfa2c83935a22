/**
 * Whether the host file has holes under data clusters. An image made with
 * preallocation=metadata names a host cluster for every guest cluster, but the file has
 * nothing there: such data reads as zeros, and block status says so (map, NBD, convert's skip).
 *
 * As QEMU does, the file is asked only for images that look preallocated that way: more
 * clusters in use by refcount than the file has allocated (by a ninth, or by two clusters).
 * That is decided once per open, at the first block status; after that each data run costs one
 * block-status query to the file (an lseek or two), however many clusters it spans.
 */
import type { BlockDriver } from '../../../block/driver.js';
import type { Mutex } from '../../../util/mutex.js';
import type { Refcounts } from './refcounts.js';

export interface HostHolesDeps {
  file: BlockDriver;
  refcounts: Refcounts;
  clusterBits: number;
  metadataLock: Mutex;
}

/** What the file holds under a data run: its first part, all hole (zero) or all data. */
export interface HostRun {
  length: number;
  zero: boolean;
}

export class HostHoles {
  readonly #d: HostHolesDeps;
  #asking: Promise<boolean> | undefined;

  constructor(deps: HostHolesDeps) {
    this.#d = deps;
  }

  /** The host file's state at `host`, at most `length` bytes; undefined when the file is not asked. */
  async at(host: number, length: number): Promise<HostRun | undefined> {
    this.#asking ??= this.#looksPreallocated();
    if (!(await this.#asking)) return undefined;
    try {
      const extent = await this.#d.file.blockStatus(host, length);
      return { length: Math.min(extent.length, length), zero: !extent.data || extent.zero };
    } catch {
      // Extra information only: without it the run is data, which is never wrong.
      return undefined;
    }
  }

  async #looksPreallocated(): Promise<boolean> {
    const { file, refcounts, clusterBits, metadataLock } = this.#d;
    try {
      const allocated = await file.allocatedSize?.();
      if (allocated === undefined) return false;
      const clusterSize = 2 ** clusterBits;
      const realClusters = Math.floor(allocated / clusterSize);
      const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
      const fileClusters = Math.ceil(file.length() / clusterSize);
      const inUse = await metadataLock.run(() => refcounts.countInUse(fileClusters, threshold));
      return inUse >= threshold;
    } catch {
      return false;
    }
  }
}
