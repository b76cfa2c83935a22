/**
 * What a remapped cluster holds: the guest's new bytes, the old content around them that the
 * new L2 entry will claim (copy-on-write), and the entry that names the result.
 */
import type { Qcow2Geometry } from '../codec/geometry.js';
import { type L2Entry, type SubclusterBitmap, subclusterKind } from '../codec/l2-entry.js';
import type { GuestReader } from './guest-reader.js';

const ALL = 0xffffffff;

export interface ClusterPlan {
  cluster: number;
  old: L2Entry;
  host: number;
  /** In-place update of an extended-L2 cluster this image owns (only the bitmap changes). */
  reuse: boolean;
  /**
   * The host cluster lies wholly past the end of the file and was never written: it already
   * reads as zeros, so zero ranges in it need no write (a first 4 KiB write into a fresh
   * cluster is one write, not three). check allows the file to end inside the last cluster.
   */
  fresh: boolean;
}

/** Part of a new host cluster's content: bytes to write, or a run that must read as zeros. */
export interface Piece {
  /** Offset inside the cluster. */
  start: number;
  data?: Buffer;
  zeros?: number;
}

export function pieceLength(piece: Piece): number {
  return piece.data ? piece.data.length : piece.zeros!;
}

export class ClusterContent {
  readonly #g: Qcow2Geometry;
  readonly #reader: GuestReader;

  constructor(geometry: Qcow2Geometry, reader: GuestReader) {
    this.#g = geometry;
    this.#reader = reader;
  }

  /**
   * What goes into a plan's host cluster: the guest's piece, plus the old content of whatever the
   * new entry will claim but the write does not cover. Old content that is zeros becomes a zero
   * range (fallocate, no data written: no needless zero writes); stored old data is copied.
   */
  async compose(plan: ClusterPlan, pieceStart: number, piece: Buffer): Promise<Piece[]> {
    const g = this.#g;
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
    const old = async (from: number, to: number): Promise<Piece | undefined> => {
      if (from >= to) return undefined;
      if (!this.#storesAny(plan.old, from, to)) return { start: from, zeros: to - from };
      const bytes = Buffer.alloc(to - from);
      const stored = await this.#readOld(plan, clusterStart, from, bytes);
      return stored ? { start: from, data: bytes } : { start: from, zeros: to - from };
    };
    const head = await old(spanStart, pieceStart);
    const tail = await old(pieceStart + piece.length, spanEnd);
    // Neighbouring byte pieces go out as one write.
    const pieces: Piece[] = [];
    for (const p of [head, { start: pieceStart, data: piece }, tail]) {
      if (!p || (p.zeros !== undefined && plan.fresh)) continue;
      const last = pieces[pieces.length - 1];
      if (last?.data && p.data) last.data = Buffer.concat([last.data, p.data]);
      else pieces.push(p);
    }
    return pieces;
  }

  /** Whether any of [from, to) of the old cluster reads stored bytes (not just zeros). */
  #storesAny(old: L2Entry, from: number, to: number): boolean {
    if (old.kind === 'compressed') return true;
    const sc = this.#g.subclusterSize;
    for (let i = Math.floor(from / sc); i * sc < to; i++) {
      const kind = subclusterKind(old, i);
      if (kind === 'data' || (kind === 'unallocated' && this.#reader.hasBacking)) return true;
    }
    return false;
  }

  /** Reads what the cluster read as before this write into `out`; true if that was stored data. */
  async #readOld(plan: ClusterPlan, clusterStart: number, from: number, out: Buffer): Promise<boolean> {
    const g = this.#g;
    const reader = this.#reader;
    const old = plan.old;
    if (old.kind === 'compressed') {
      (await reader.readCompressed(old)).copy(out, 0, from, from + out.length);
      return true;
    }
    let stored = false;
    for (let pos = from; pos < from + out.length; ) {
      const sc = Math.floor(pos / g.subclusterSize);
      const next = Math.min((sc + 1) * g.subclusterSize, from + out.length);
      const slice = out.subarray(pos - from, next - from);
      const kind = subclusterKind(old, sc);
      if (kind === 'data') {
        await reader.readHost((old as { host: number }).host + pos, slice);
        stored = true;
      } else if (kind === 'unallocated' && reader.hasBacking) {
        await reader.readBacking(clusterStart + pos, slice);
        stored = true;
      } else {
        slice.fill(0);
      }
      pos = next;
    }
    return stored;
  }
}

/** The L2 entry that names a plan's host cluster once [from, to) of it is written. */
export function newEntry(g: Qcow2Geometry, plan: ClusterPlan, from: number, to: number): L2Entry {
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
