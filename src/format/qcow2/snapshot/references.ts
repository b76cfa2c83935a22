/**
 * The references an L1 table makes, as qcow2 counts them: every L2 table it names, and every
 * host cluster those tables' entries name (a compressed cluster: each host cluster its bytes
 * touch). A cluster reachable from several L1 tables (the active one and snapshots') has one
 * reference per table, even through a shared L2 table: that is how QEMU counts, and what
 * `qemu-img check` expects.
 *
 * The walk is deterministic as long as the tables do not change, which lets a refcount change
 * that fails halfway be undone exactly: the same walk, as far as it got, with the opposite sign.
 */
import { VdiskError } from '../../../block/errors.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import { l2OffsetAt } from '../codec/l1-entry.js';
import { decodeL2 } from '../codec/l2-entry.js';
import type { Allocator } from '../image/allocator.js';
import type { L2Tables } from '../image/l2-tables.js';
import type { MetadataWriter } from '../image/metadata-writer.js';
import type { Refcounts } from '../image/refcounts.js';

/** `clusters` whole host clusters from `offset`, referenced once. */
export interface Reference {
  offset: number;
  clusters: number;
  /** An L2 table, or what an entry names. */
  kind: 'l2' | 'data';
}

export interface ReferenceDeps {
  geometry: Qcow2Geometry;
  tables: L2Tables;
  writer: MetadataWriter;
  allocator: Allocator;
  refcounts: Refcounts;
  /** The image file's length: a table past it is not a table. */
  fileLength: () => number;
}

/**
 * Every reference of an L1 table, per L2 table: what its entries name, then the table itself.
 * Throws ECORRUPT for a table that cannot be one (unaligned, past the end of the file) and for
 * entries that cannot be decoded or that name the image's own metadata as data.
 */
export async function* referencesOf(l1: Buffer, d: ReferenceDeps): AsyncGenerator<Reference> {
  const g = d.geometry;
  for (let i = 0; i < l1.length / 8; i++) {
    const l2 = l2OffsetAt(l1, i, g);
    if (l2 === 0) continue;
    if (l2 + g.clusterSize > d.fileLength()) {
      throw new VdiskError('ECORRUPT', `L2 table at 0x${l2.toString(16)} lies past the end of the file`);
    }
    const found: Reference[] = [];
    await d.tables.visitTable(l2, (data) => {
      for (let j = 0; j < g.l2Entries; j++) {
        const ref = entryReference(data, j, g);
        if (ref) found.push(ref);
      }
      return false;
    });
    for (const ref of found) {
      if (d.writer.blocked('data', ref.offset, ref.clusters * g.clusterSize)) {
        throw new VdiskError(
          'ECORRUPT',
          `The L2 table at 0x${l2.toString(16)} names the image's metadata at 0x${ref.offset.toString(16)} as data`,
        );
      }
      yield ref;
    }
    yield { offset: l2, clusters: 1, kind: 'l2' };
  }
}

/** The host clusters L2 entry `j` references, if any. */
function entryReference(data: Buffer, j: number, g: Qcow2Geometry): Reference | undefined {
  const entry = decodeL2(data, j, g);
  if (entry.kind === 'compressed') {
    const first = Math.floor(entry.host / g.clusterSize);
    const last = Math.floor((entry.host + entry.length - 1) / g.clusterSize);
    return { offset: first * g.clusterSize, clusters: last - first + 1, kind: 'data' };
  }
  if ((entry.kind === 'data' || entry.kind === 'zero') && entry.host !== 0) {
    return { offset: entry.host, clusters: 1, kind: 'data' };
  }
  return undefined;
}

/**
 * Adds one reference to everything `l1` references. All or nothing: when a refcount cannot
 * grow (it would overflow refcount_bits, or no refcount block counts the cluster), the
 * references added so far are taken back before the error is thrown.
 */
export async function addReferences(l1: Buffer, d: ReferenceDeps): Promise<void> {
  let done = 0;
  try {
    for await (const ref of referencesOf(l1, d)) {
      await d.allocator.addReference(ref.offset, ref.clusters);
      done++;
    }
  } catch (err) {
    let undone = 0;
    for await (const ref of referencesOf(l1, d)) {
      if (undone++ >= done) break;
      await d.allocator.free(ref.offset, ref.clusters);
    }
    throw err;
  }
}

/**
 * Checks, changing nothing, that every reference of `l1` can be added: each cluster is counted
 * by a refcount block (its refcount above zero) and its refcount below what refcount_bits holds.
 * A cluster referenced twice by the same walk can still overflow; addReferences undoes that.
 */
export async function checkAddable(l1: Buffer, d: ReferenceDeps): Promise<void> {
  await eachCluster(l1, d, (offset, refcount) => {
    if (refcount === 0) return `Cluster 0x${offset.toString(16)} is referenced but its refcount is 0`;
    if (refcount >= d.refcounts.max) {
      return `Refcount of cluster at 0x${offset.toString(16)} would exceed ${d.refcounts.max}`;
    }
    return undefined;
  });
}

/**
 * Checks, changing nothing, that every reference of `l1` can be dropped: each cluster is
 * counted by a refcount block and its refcount is above zero.
 */
export async function checkDroppable(l1: Buffer, d: ReferenceDeps): Promise<void> {
  await eachCluster(l1, d, (offset, refcount) =>
    refcount === 0 ? `Cluster 0x${offset.toString(16)} is referenced but its refcount is 0` : undefined,
  );
}

/** Calls `problem` with every cluster `l1` references and its refcount; throws what it returns. */
async function eachCluster(
  l1: Buffer,
  d: ReferenceDeps,
  problem: (offset: number, refcount: number) => string | undefined,
): Promise<void> {
  for await (const ref of referencesOf(l1, d)) {
    for (let c = 0; c < ref.clusters; c++) {
      const offset = ref.offset + c * d.geometry.clusterSize;
      const found = problem(offset, await d.allocator.refcountOf(offset));
      if (found !== undefined) throw new VdiskError(found.includes('exceed') ? 'EINVAL' : 'ECORRUPT', found);
    }
  }
}

/**
 * Drops one reference to everything `l1` references, after checkDroppable. L2 tables left
 * without references leave the cache and the overlap map; returns the clusters left without
 * references, for the caller to give back to the host once the refcounts are durable.
 */
export async function dropReferences(l1: Buffer, d: ReferenceDeps): Promise<number[]> {
  const freed: number[] = [];
  for await (const ref of referencesOf(l1, d)) {
    await d.allocator.free(ref.offset, ref.clusters);
    for (let c = 0; c < ref.clusters; c++) {
      const offset = ref.offset + c * d.geometry.clusterSize;
      if ((await d.allocator.refcountOf(offset)) !== 0) continue;
      if (ref.kind === 'l2') {
        d.tables.forgetTable(offset);
        d.writer.release('l2', offset, d.geometry.clusterSize);
        d.writer.release('snapshot-l2', offset, d.geometry.clusterSize);
      }
      freed.push(offset);
    }
  }
  return freed;
}
