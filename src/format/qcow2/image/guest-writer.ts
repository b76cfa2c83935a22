/**
 * Writing guest bytes. Clusters that are already this image's own data (COPIED) are written in
 * place under a shared lock. Any other cluster is remapped under an exclusive lock: a host
 * cluster is allocated (or a preallocated zero cluster reused), the bytes the write does not
 * cover are copied in from the old content (copy-on-write), the new cluster is written whole
 * in one request, and only then does the L2 entry point at it.
 */
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { L2Entry, SubclusterBitmap } from '../codec/l2-entry.js';
import { subclusterKind } from '../codec/l2-entry.js';
import { readBacking, readCompressed, readHost } from './guest-reader.js';
import { mapRange, mapRangeCached } from './mapping.js';
import type { ImageParts } from './parts.js';

const ALL = 0xffffffff;

export async function writeGuest(parts: ImageParts, offset: number, buf: Buffer): Promise<void> {
  const g = parts.geometry;
  const first = Math.floor(offset / g.clusterSize);
  const end = Math.ceil((offset + buf.length) / g.clusterSize);

  const locks = parts.clusterLocks;
  let release = locks.tryAcquire(first, end, 'shared') ?? (await locks.acquire(first, end, 'shared'));
  try {
    // As in readGuest: a mapping in cached tables needs no metadata lock.
    const runs =
      mapRangeCached(parts.tables, g, offset, buf.length) ??
      (await parts.metadataLock.run(() => mapRange(parts.tables, g, offset, buf.length)));
    if (runs.every((r) => r.kind === 'data' && r.copied)) {
      await writeRuns(parts, runs, offset, buf);
      return;
    }
    release();
    release = await parts.clusterLocks.acquire(first, end, 'exclusive');
    await remap(parts, offset, buf);
  } finally {
    release();
  }
}

async function writeRuns(
  parts: ImageParts,
  runs: { offset: number; length: number; host: number }[],
  offset: number,
  buf: Buffer,
): Promise<void> {
  for (const run of runs) {
    if (parts.writer.blocked('data', run.host, run.length)) await parts.writer.check('data', run.host, run.length);
  }
  if (runs.length === 1) return parts.file.write(runs[0]!.host, buf);
  await Promise.all(
    runs.map((run) => parts.file.write(run.host, buf.subarray(run.offset - offset, run.offset - offset + run.length))),
  );
}

interface ClusterPlan {
  cluster: number;
  old: L2Entry;
  host: number;
  /** In-place update of an extended-L2 cluster this image owns (only the bitmap changes). */
  reuse: boolean;
}

/** Remaps every cluster of the request. The caller holds the clusters exclusively. */
async function remap(parts: ImageParts, offset: number, buf: Buffer): Promise<void> {
  const g = parts.geometry;
  const first = Math.floor(offset / g.clusterSize);
  const end = Math.ceil((offset + buf.length) / g.clusterSize);

  const plans = await parts.metadataLock.run(() => planClusters(parts, first, end));
  const writes: { host: number; piece: Piece }[] = [];
  for (const plan of plans) {
    const clusterStart = plan.cluster * g.clusterSize;
    const from = Math.max(offset, clusterStart);
    const to = Math.min(offset + buf.length, clusterStart + g.clusterSize);
    const { pieces } = await composeCluster(parts, plan, from - clusterStart, buf.subarray(from - offset, to - offset));
    for (const piece of pieces) writes.push({ host: plan.host + piece.start, piece });
  }
  for (const w of writes) await parts.writer.check('data', w.host, pieceLength(w.piece));
  await Promise.all(
    writes.map((w) =>
      w.piece.data
        ? parts.file.write(w.host, w.piece.data)
        : parts.file.writeZeroes(w.host, w.piece.zeros!, { mayUnmap: false }),
    ),
  );

  await parts.metadataLock.run(async () => {
    // R3, for every remapped cluster: its new content (guest data, copied old data, zero ranges)
    // is durable before an L2 entry names it. Without this, a crash can leave an entry pointing
    // past the end of the file (a corruption for check) or at the cluster's stale content (a
    // reused cluster's former data; the data before a write-zeroes that kept the cluster).
    parts.l2Cache.dependOnFileFlush();
    const toFree: L2Entry[] = [];
    const newEntries = plans.map((plan) => {
      const clusterStart = plan.cluster * g.clusterSize;
      const from = Math.max(offset, clusterStart) - clusterStart;
      const to = Math.min(offset + buf.length, clusterStart + g.clusterSize) - clusterStart;
      if (!plan.reuse && plan.old.kind !== 'unallocated' && plan.host !== oldHost(plan.old)) toFree.push(plan.old);
      return newEntry(g, plan, from, to);
    });
    await setEntriesGrouped(parts, plans, newEntries);
    if (toFree.length > 0) await freeEntries(parts, toFree);
  });
}

/** Writes consecutive clusters' entries together. */
async function setEntriesGrouped(parts: ImageParts, plans: ClusterPlan[], entries: L2Entry[]): Promise<void> {
  let i = 0;
  while (i < plans.length) {
    let j = i + 1;
    while (j < plans.length && plans[j]!.cluster === plans[j - 1]!.cluster + 1) j++;
    await parts.tables.setEntries(plans[i]!.cluster, entries.slice(i, j));
    i = j;
  }
}

function oldHost(entry: L2Entry): number {
  return entry.kind === 'data' || entry.kind === 'zero' ? entry.host : -1;
}

/** Decides, per cluster, which host cluster the new data goes to. Runs under the metadata lock. */
async function planClusters(parts: ImageParts, first: number, end: number): Promise<ClusterPlan[]> {
  const g = parts.geometry;
  const olds: L2Entry[] = [];
  for (let c = first; c < end; ) {
    const entries = await parts.tables.entries(c, end - c);
    olds.push(...entries);
    c += entries.length;
  }
  await checkHostsOf(parts, olds);
  const plans: ClusterPlan[] = [];
  const needNew: number[] = [];
  olds.forEach((old, i) => {
    const cluster = first + i;
    if ((old.kind === 'data' || old.kind === 'zero') && old.copied && old.host !== 0) {
      // Our own cluster: an extended-L2 bitmap update, or a preallocated zero cluster to fill.
      plans.push({ cluster, old, host: old.host, reuse: old.kind === 'data' });
    } else {
      plans.push({ cluster, old, host: -1, reuse: false });
      needNew.push(plans.length - 1);
    }
  });
  // Allocate consecutive new clusters contiguously so the data goes out in fewer writes.
  let i = 0;
  while (i < needNew.length) {
    let j = i + 1;
    while (j < needNew.length && needNew[j] === needNew[j - 1]! + 1) j++;
    const host = await parts.allocator.allocate(j - i);
    for (let k = i; k < j; k++) plans[needNew[k]!]!.host = host + (k - i) * g.clusterSize;
    i = j;
  }
  return plans;
}

/** Part of a new host cluster's content: bytes to write, or a run that must read as zeros. */
interface Piece {
  /** Offset inside the cluster. */
  start: number;
  data?: Buffer;
  zeros?: number;
}

function pieceLength(piece: Piece): number {
  return piece.data ? piece.data.length : piece.zeros!;
}

/**
 * What goes into a plan's host cluster: the guest's piece, plus the old content of whatever the
 * new entry will claim but the write does not cover. Old content that is zeros becomes a zero
 * range (fallocate, no data written: no needless zero writes); stored old data is copied.
 * Returns whether old data was copied.
 */
async function composeCluster(
  parts: ImageParts,
  plan: ClusterPlan,
  pieceStart: number,
  piece: Buffer,
): Promise<{ pieces: Piece[]; copied: boolean }> {
  const g = parts.geometry;
  // The span the new entry will claim as data: whole cluster, or whole subclusters with extended L2.
  const unit = g.extendedL2 ? g.subclusterSize : g.clusterSize;
  let spanStart = Math.floor(pieceStart / unit) * unit;
  let spanEnd = Math.ceil((pieceStart + piece.length) / unit) * unit;
  if (g.extendedL2 && (plan.old.kind === 'compressed' || (plan.old.kind === 'data' && !plan.old.copied))) {
    // Everything the old shared cluster held must move to the new one.
    spanStart = 0;
    spanEnd = g.clusterSize;
  }
  const clusterStart = plan.cluster * g.clusterSize;
  let copied = false;
  const old = async (from: number, to: number): Promise<Piece | undefined> => {
    if (from >= to) return undefined;
    const bytes = Buffer.alloc(to - from);
    const stored = await readOld(parts, plan, clusterStart, from, bytes);
    copied ||= stored;
    return stored ? { start: from, data: bytes } : { start: from, zeros: to - from };
  };
  const head = await old(spanStart, pieceStart);
  const tail = await old(pieceStart + piece.length, spanEnd);
  // Neighbouring byte pieces go out as one write.
  const pieces: Piece[] = [];
  for (const p of [head, { start: pieceStart, data: piece }, tail]) {
    if (!p) continue;
    const last = pieces[pieces.length - 1];
    if (last?.data && p.data) last.data = Buffer.concat([last.data, p.data]);
    else pieces.push(p);
  }
  return { pieces, copied };
}

/** Reads what the cluster read as before this write into `out`; true if that was stored data. */
async function readOld(
  parts: ImageParts,
  plan: ClusterPlan,
  clusterStart: number,
  from: number,
  out: Buffer,
): Promise<boolean> {
  const g = parts.geometry;
  const old = plan.old;
  if (old.kind === 'compressed') {
    (await readCompressed(parts, old)).copy(out, 0, from, from + out.length);
    return true;
  }
  let stored = false;
  for (let pos = from; pos < from + out.length; ) {
    const sc = Math.floor(pos / g.subclusterSize);
    const next = Math.min((sc + 1) * g.subclusterSize, from + out.length);
    const slice = out.subarray(pos - from, next - from);
    const kind = subclusterKind(old, sc);
    if (kind === 'data') {
      await readHost(parts, (old as { host: number }).host + pos, slice);
      stored = true;
    } else if (kind === 'unallocated' && parts.backing) {
      await readBacking(parts, clusterStart + pos, slice);
      stored = true;
    } else {
      slice.fill(0);
    }
    pos = next;
  }
  return stored;
}

function newEntry(g: Qcow2Geometry, plan: ClusterPlan, from: number, to: number): L2Entry {
  if (!g.extendedL2) return { kind: 'data', host: plan.host, copied: true };
  const firstSc = Math.floor(from / g.subclusterSize);
  const lastSc = Math.ceil(to / g.subclusterSize) - 1;
  let written = 0;
  for (let sc = firstSc; sc <= lastSc; sc++) written |= 1 << sc;
  written >>>= 0;
  const old = plan.old;
  let sub: SubclusterBitmap;
  if (old.kind === 'compressed' || (old.kind === 'data' && !old.copied)) {
    sub = { alloc: ALL, zero: 0 };
  } else if (old.kind === 'data' || old.kind === 'unallocated') {
    const before = old.sub ?? { alloc: old.kind === 'data' ? ALL : 0, zero: 0 };
    sub = { alloc: (before.alloc | written) >>> 0, zero: (before.zero & ~written) >>> 0 };
  } else {
    // A zero cluster: the rest keeps reading as zeros.
    sub = { alloc: written, zero: (ALL & ~written) >>> 0 };
  }
  return { kind: 'data', host: plan.host, copied: true, sub };
}

/**
 * Refuses (marking the image corrupt) entries whose host clusters hold the image's metadata:
 * rewriting, freeing or punching them would destroy a table. Called before anything changes.
 */
export async function checkHostsOf(parts: ImageParts, entries: L2Entry[]): Promise<void> {
  const cs = parts.geometry.clusterSize;
  for (const entry of entries) {
    if ((entry.kind === 'data' || entry.kind === 'zero') && entry.host !== 0) {
      await parts.writer.check('data', entry.host, cs);
    } else if (entry.kind === 'compressed') {
      await parts.writer.check('data', entry.host, entry.length);
    }
  }
}

/**
 * Drops this image's references to host clusters no L2 entry names any more. The cleared entries
 * are durable first (rule R4), then the refcounts drop, then the space is given back.
 */
export async function freeEntries(parts: ImageParts, entries: L2Entry[]): Promise<void> {
  await checkHostsOf(parts, entries);
  await parts.l2Cache.flush();
  const g = parts.geometry;
  const holes: number[] = [];
  for (const entry of entries) {
    if (entry.kind === 'data' || entry.kind === 'zero') {
      if (entry.host === 0) continue;
      await parts.allocator.free(entry.host, 1);
      if (entry.copied) holes.push(entry.host);
    } else if (entry.kind === 'compressed') {
      // Its host cluster may be the one compressed writes are packing into.
      parts.allocator.resetCompressedPacking();
      const firstCluster = Math.floor(entry.host / g.clusterSize);
      const lastCluster = Math.floor((entry.host + entry.length - 1) / g.clusterSize);
      await parts.allocator.free(firstCluster * g.clusterSize, lastCluster - firstCluster + 1);
    }
  }
  await Promise.all(holes.map((host) => parts.file.discard(host, g.clusterSize)));
}
