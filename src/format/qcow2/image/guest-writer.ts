/**
 * Writing guest bytes. Clusters that are already this image's own data (COPIED) are written in
 * place under a shared lock. Any other cluster is remapped under an exclusive lock: a host
 * cluster is allocated (or a preallocated zero cluster reused), the bytes the write does not
 * cover are copied in from the old content (copy-on-write), the new cluster is written whole
 * in one request, and only then does the L2 entry point at it.
 */
import type { BlockDriver } from '../../../block/driver.js';
import type { Mutex } from '../../../util/mutex.js';
import type { RangeLock } from '../../../util/range-lock.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { L2Entry } from '../codec/l2-entry.js';
import type { Allocator } from './allocator.js';
import { ClusterContent, type ClusterPlan, newEntry, type Piece, pieceLength } from './cluster-content.js';
import type { GuestReader } from './guest-reader.js';
import type { HostClusters } from './host-clusters.js';
import type { L2Tables } from './l2-tables.js';
import type { Mapping } from './mapping.js';
import type { MetadataWriter } from './metadata-writer.js';

/** How far ahead of fresh clusters the file is grown under direct I/O. */
const GROW_STEP = 1 << 20;

export interface GuestWriterDeps {
  file: BlockDriver;
  geometry: Qcow2Geometry;
  writer: MetadataWriter;
  tables: L2Tables;
  allocator: Allocator;
  mapping: Mapping;
  reader: GuestReader;
  hostClusters: HostClusters;
  metadataLock: Mutex;
  clusterLocks: RangeLock;
}

export class GuestWriter {
  readonly #d: GuestWriterDeps;
  readonly #content: ClusterContent;

  constructor(deps: GuestWriterDeps) {
    this.#d = deps;
    this.#content = new ClusterContent(deps.geometry, deps.reader);
  }

  async write(offset: number, buf: Buffer): Promise<void> {
    const g = this.#d.geometry;
    const first = Math.floor(offset / g.clusterSize);
    const end = Math.ceil((offset + buf.length) / g.clusterSize);

    const locks = this.#d.clusterLocks;
    let release = locks.tryAcquire(first, end, 'shared') ?? (await locks.acquire(first, end, 'shared'));
    try {
      // As in reads: a mapping in cached tables needs no metadata lock.
      const runs = this.#d.mapping.cached(offset, buf.length) ?? (await this.#d.mapping.lookup(offset, buf.length));
      if (runs.every((r) => r.kind === 'data' && r.copied)) {
        await this.#writeRuns(runs, offset, buf);
        return;
      }
      release();
      release = await locks.acquire(first, end, 'exclusive');
      await this.#remap(offset, buf);
    } finally {
      release();
    }
  }

  async #writeRuns(
    runs: { offset: number; length: number; host: number }[],
    offset: number,
    buf: Buffer,
  ): Promise<void> {
    const writer = this.#d.writer;
    for (const run of runs) {
      if (writer.blocked('data', run.host, run.length)) await writer.check('data', run.host, run.length);
    }
    if (runs.length === 1) return this.#d.file.write(runs[0]!.host, buf);
    await Promise.all(
      runs.map((run) =>
        this.#d.file.write(run.host, buf.subarray(run.offset - offset, run.offset - offset + run.length)),
      ),
    );
  }

  /** Remaps every cluster of the request. The caller holds the clusters exclusively. */
  async #remap(offset: number, buf: Buffer): Promise<void> {
    const g = this.#d.geometry;
    const first = Math.floor(offset / g.clusterSize);
    const end = Math.ceil((offset + buf.length) / g.clusterSize);

    const plans = await this.#d.metadataLock.run(() => this.#planClusters(first, end));
    const writes: { host: number; piece: Piece }[] = [];
    for (const plan of plans) {
      const clusterStart = plan.cluster * g.clusterSize;
      const from = Math.max(offset, clusterStart);
      const to = Math.min(offset + buf.length, clusterStart + g.clusterSize);
      const pieces = await this.#content.compose(plan, from - clusterStart, buf.subarray(from - offset, to - offset));
      for (const piece of pieces) writes.push({ host: plan.host + piece.start, piece });
    }
    for (const w of writes) await this.#d.writer.check('data', w.host, pieceLength(w.piece));
    await Promise.all(
      writes.map((w) =>
        w.piece.data
          ? this.#d.file.write(w.host, w.piece.data)
          : this.#d.file.writeZeroes(w.host, w.piece.zeros!, { mayUnmap: false }),
      ),
    );

    await this.#d.metadataLock.run(async () => {
      // R3 (docs/architecture.md), for every remapped cluster: its new content (guest data,
      // copied old data, zero ranges) is durable before an L2 entry names it. Without this, a
      // crash can leave an entry pointing past the end of the file (a corruption for check) or
      // at the cluster's stale content (a reused cluster's former data; the data before a
      // write-zeroes that kept the cluster).
      this.#d.tables.dependOnDataWrites();
      const toFree: L2Entry[] = [];
      const newEntries = plans.map((plan) => {
        const clusterStart = plan.cluster * g.clusterSize;
        const from = Math.max(offset, clusterStart) - clusterStart;
        const to = Math.min(offset + buf.length, clusterStart + g.clusterSize) - clusterStart;
        if (!plan.reuse && plan.old.kind !== 'unallocated' && plan.host !== oldHost(plan.old)) toFree.push(plan.old);
        return newEntry(g, plan, from, to);
      });
      await this.#setEntriesGrouped(plans, newEntries);
      if (toFree.length > 0) await this.#d.hostClusters.release(toFree);
    });
  }

  /**
   * Under direct I/O a write past the end of the file extends it, and Linux file systems run
   * such writes one at a time and synchronously; growing the file (fallocate) in turn waits for
   * every direct write in flight. So the file is grown over fresh clusters before their data is
   * written, a step ahead at a time. Only the fresh run [from, end) and clusters never handed
   * out are zeroed: nothing else can be written there meanwhile. It runs under the metadata
   * lock, so the next fresh cluster is inside the file before anyone can be given it.
   */
  async #growOver(from: number, end: number): Promise<void> {
    const file = this.#d.file;
    if (end <= file.length()) return;
    const step = Math.max(GROW_STEP, this.#d.geometry.clusterSize);
    const target = Math.ceil(end / step) * step;
    // Past `end`, clusters up to here may have been handed out with this run (refcount blocks).
    const untouched = Math.max(end, this.#d.allocator.untouchedFrom);
    const keep = { mayUnmap: false };
    if (untouched === end) return file.writeZeroes(from, target - from, keep);
    await file.writeZeroes(from, end - from, keep);
    if (target > untouched) await file.writeZeroes(untouched, target - untouched, keep);
  }

  /** Writes consecutive clusters' entries together. */
  async #setEntriesGrouped(plans: ClusterPlan[], entries: L2Entry[]): Promise<void> {
    let i = 0;
    while (i < plans.length) {
      let j = i + 1;
      while (j < plans.length && plans[j]!.cluster === plans[j - 1]!.cluster + 1) j++;
      await this.#d.tables.setEntries(plans[i]!.cluster, entries.slice(i, j));
      i = j;
    }
  }

  /** Decides, per cluster, which host cluster the new data goes to. Runs under the metadata lock. */
  async #planClusters(first: number, end: number): Promise<ClusterPlan[]> {
    const g = this.#d.geometry;
    const olds: L2Entry[] = [];
    for (let c = first; c < end; ) {
      const entries = await this.#d.tables.entries(c, end - c);
      olds.push(...entries);
      c += entries.length;
    }
    await this.#d.hostClusters.check(olds);
    const plans: ClusterPlan[] = [];
    const needNew: number[] = [];
    olds.forEach((old, i) => {
      const cluster = first + i;
      if ((old.kind === 'data' || old.kind === 'zero') && old.copied && old.host !== 0) {
        // Our own cluster: an extended-L2 bitmap update, or a preallocated zero cluster to fill.
        plans.push({ cluster, old, host: old.host, reuse: old.kind === 'data', fresh: false });
      } else {
        plans.push({ cluster, old, host: -1, reuse: false, fresh: false });
        needNew.push(plans.length - 1);
      }
    });
    // Allocate consecutive new clusters contiguously so the data goes out in fewer writes; one
    // L2 table's clusters at a time, its table first, as QEMU allocates them (the same layout).
    let i = 0;
    while (i < needNew.length) {
      const table = Math.floor(plans[needNew[i]!]!.cluster / g.l2Entries);
      let j = i + 1;
      while (
        j < needNew.length &&
        needNew[j] === needNew[j - 1]! + 1 &&
        Math.floor(plans[needNew[j]!]!.cluster / g.l2Entries) === table
      ) {
        j++;
      }
      await this.#d.tables.prepareTable(plans[needNew[i]!]!.cluster);
      const untouched = this.#d.allocator.untouchedFrom;
      const host = await this.#d.allocator.allocate(j - i);
      // Never handed out while the image is open, and past what the file held when it was
      // opened: it reads as zeros, and only this plan will write there.
      const fresh = host >= untouched;
      if (fresh && this.#d.file.alignment.memory > 1) await this.#growOver(host, host + (j - i) * g.clusterSize);
      for (let k = i; k < j; k++) {
        const plan = plans[needNew[k]!]!;
        plan.host = host + (k - i) * g.clusterSize;
        plan.fresh = fresh;
      }
      i = j;
    }
    return plans;
  }
}

function oldHost(entry: L2Entry): number {
  return entry.kind === 'data' || entry.kind === 'zero' ? entry.host : -1;
}
