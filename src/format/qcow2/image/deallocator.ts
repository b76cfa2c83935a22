/**
 * Write-zeroes and discard over whole clusters: entries change to "reads as zero" or
 * "unallocated", and host clusters that lose their last reference are freed (after the new
 * entries are durable, R4 in docs/architecture.md) and punched out of the file.
 */
import type { Mutex } from '../../../util/mutex.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { L2Entry } from '../codec/l2-entry.js';
import type { HostClusters } from './host-clusters.js';
import type { L2Tables } from './l2-tables.js';

const ALL = 0xffffffff;

export type DeallocateMode =
  /** Guest discard: the range may read as anything documented; vdisk makes it read as zeros where it can. */
  | 'discard'
  /** Write-zeroes that may give the space back. */
  | 'zero-unmap'
  /** Write-zeroes that keeps the host clusters allocated (preallocated zero clusters). */
  | 'zero-keep'
  /** Shrinking: the clusters leave the image entirely. */
  | 'forget';

export interface DeallocatorDeps {
  geometry: Qcow2Geometry;
  /** With a backing file, "unallocated" shows the backing data: zeros need the zero flag. */
  hasBacking: boolean;
  tables: L2Tables;
  hostClusters: HostClusters;
  metadataLock: Mutex;
}

export class Deallocator {
  readonly #d: DeallocatorDeps;

  constructor(deps: DeallocatorDeps) {
    this.#d = deps;
  }

  /**
   * Applies `mode` to `count` whole guest clusters from `cluster`. The caller holds the clusters
   * exclusively. Returns false (changing nothing) when the image cannot express zeros
   * (version 2 with a backing file), so the caller writes zero bytes instead.
   */
  async deallocate(cluster: number, count: number, mode: DeallocateMode): Promise<boolean> {
    const hasZeroFlag = this.#d.geometry.version >= 3;
    if (!hasZeroFlag && (mode === 'zero-unmap' || mode === 'zero-keep') && this.#d.hasBacking) return false;
    const tables = this.#d.tables;
    await this.#d.metadataLock.run(async () => {
      const toFree: L2Entry[] = [];
      for (let c = cluster; c < cluster + count; ) {
        const olds = await tables.entries(c, cluster + count - c);
        const news = olds.map((old) => {
          const keep =
            hasZeroFlag &&
            mode === 'zero-keep' &&
            (old.kind === 'data' || old.kind === 'zero') &&
            old.copied &&
            old.host !== 0;
          if (!keep && old.kind !== 'unallocated') toFree.push(old);
          return this.#replacement(old, mode, keep);
        });
        await this.#d.hostClusters.check(olds);
        if (olds.some((old, i) => !sameEntry(old, news[i]!))) await tables.setEntries(c, news);
        c += olds.length;
      }
      if (toFree.length > 0) await this.#d.hostClusters.release(toFree);
    });
    return true;
  }

  #replacement(old: L2Entry, mode: DeallocateMode, keep: boolean): L2Entry {
    const g = this.#d.geometry;
    const host = keep ? (old as { host: number }).host : 0;
    // Without a backing file and without data, unallocated already reads as zeros.
    const needZero = g.version >= 3 && (this.#d.hasBacking || old.kind !== 'unallocated' || keep);
    if (mode === 'forget' || (mode === 'discard' && g.version < 3)) return { kind: 'unallocated' };
    if (!needZero) return { kind: 'unallocated' };
    if (g.extendedL2) {
      if (keep) return { kind: 'data', host, copied: true, sub: { alloc: 0, zero: ALL } };
      return { kind: 'unallocated', sub: { alloc: 0, zero: ALL } };
    }
    return { kind: 'zero', host, copied: keep };
  }
}

function sameEntry(a: L2Entry, b: L2Entry): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
