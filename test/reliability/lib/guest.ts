/**
 * The guest side of a crash test: a BlockBackend wrapper that writes recognisable data (every
 * 512-byte sector names the write and the sector it was written to), records when each request
 * was issued and acknowledged on the recorder's clock, and afterwards says what a sector may
 * hold after a crash at a given time:
 *
 * - the newest version that was durable by then (acknowledged in writethrough and directsync;
 *   acknowledged before a completed flush in writeback and none; never in unsafe), or anything
 *   the guest wrote there after it (issued by then); with no durable version, the old content too;
 * - never another sector's data, another write's data, or metadata.
 */
import type { BlockBackend } from '../../../src/block/backend.js';
import type { Preallocation } from '../../../src/block/preallocation.js';

export const SECTOR = 512;
const MAGIC = 0x5644534b; // "VDSK"

export type GuestKind = 'write' | 'zero' | 'discard' | 'flush' | 'resize';

export interface GuestOp {
  id: number;
  kind: GuestKind;
  offset: number;
  length: number;
  data?: Buffer;
  fua: boolean;
  issue: number;
  ack: number;
  /** resize: the size before and after. */
  oldSize?: number;
  newSize?: number;
  /** When the request's effect is promised durable (Infinity: never). */
  durableAt: number;
}

export interface Clock {
  tick(): number;
}

export interface GuestPolicy {
  /** The guest-visible write cache: off in writethrough and directsync. */
  writeCache: boolean;
  /** cache=unsafe: nothing is ever promised durable. */
  noFlush: boolean;
  /** What a discarded sector reads as: zeros, or (v2 with a backing file) the old backing content. */
  discardReadsInitial: boolean;
  /** The image's cluster size: vdisk discards whole clusters only. */
  clusterSize: number;
}

/** The bytes write `id` puts into guest sector `sector`. */
export function sectorPattern(id: number, sector: number, out: Buffer): void {
  out.writeUInt32BE(MAGIC, 0);
  out.writeUInt32BE(id, 4);
  out.writeUInt32BE(Math.floor(sector / 2 ** 32), 8);
  out.writeUInt32BE(sector >>> 0, 12);
  for (let i = 16; i < SECTOR; i++) out[i] = (id * 31 + sector * 7 + i) & 0xff;
}

/** Names what a sector holds, for failure messages. */
export function describeSector(buf: Buffer): string {
  if (buf.every((b) => b === 0)) return 'zeros';
  if (buf.length >= 16 && buf.readUInt32BE(0) === MAGIC) {
    const sector = buf.readUInt32BE(8) * 2 ** 32 + buf.readUInt32BE(12);
    return `guest write #${buf.readUInt32BE(4)} of sector ${sector}`;
  }
  if (buf.length >= 4 && buf.readUInt32BE(0) === 0x514649fb) return 'a qcow2 header';
  return `unknown bytes ${buf.subarray(0, 16).toString('hex')}`;
}

export class Guest {
  readonly ops: GuestOp[] = [];
  readonly backend: BlockBackend;
  readonly #clock: Clock;
  readonly #policy: GuestPolicy;
  #nextId = 1;
  recording = false;
  /** When set, a failed request is reported here and the workload goes on (fault tests). */
  onError: ((err: unknown, op: GuestOp) => void) | undefined;

  constructor(backend: BlockBackend, clock: Clock, policy: GuestPolicy) {
    this.backend = backend;
    this.#clock = clock;
    this.#policy = policy;
  }

  get size(): number {
    return this.backend.length;
  }

  async write(offset: number, length: number, options: { fua?: boolean } = {}): Promise<void> {
    checkAligned(offset, length);
    const id = this.#nextId++;
    const data = Buffer.alloc(length);
    for (let s = 0; s < length / SECTOR; s++) {
      sectorPattern(id, offset / SECTOR + s, data.subarray(s * SECTOR, (s + 1) * SECTOR));
    }
    await this.#run({ id, kind: 'write', offset, length, data, fua: Boolean(options.fua) }, () =>
      this.backend.write(offset, data, { fua: options.fua }),
    );
  }

  async zero(offset: number, length: number, options: { mayUnmap?: boolean; fua?: boolean } = {}): Promise<void> {
    checkAligned(offset, length);
    await this.#run({ id: this.#nextId++, kind: 'zero', offset, length, fua: Boolean(options.fua) }, () =>
      this.backend.writeZeroes(offset, length, { mayUnmap: options.mayUnmap, fua: options.fua }),
    );
  }

  /** Discards whole clusters (vdisk leaves partial clusters alone; the model knows only whole ones). */
  async discard(offset: number, length: number): Promise<void> {
    const cs = this.#policy.clusterSize;
    if (offset % cs !== 0 || (length % cs !== 0 && offset + length !== this.size)) {
      throw new Error(`test bug: discard ${offset}+${length} is not whole clusters`);
    }
    await this.#run({ id: this.#nextId++, kind: 'discard', offset, length, fua: false }, () =>
      this.backend.discard(offset, length),
    );
  }

  async flush(): Promise<void> {
    await this.#run({ id: this.#nextId++, kind: 'flush', offset: 0, length: 0, fua: false }, () =>
      this.backend.flush(),
    );
  }

  async resize(size: number, preallocation: Preallocation = 'off'): Promise<void> {
    const oldSize = this.size;
    await this.#run(
      { id: this.#nextId++, kind: 'resize', offset: 0, length: 0, fua: false, oldSize, newSize: size },
      () => this.backend.truncate(size, preallocation),
    );
  }

  async #run(op: Omit<GuestOp, 'issue' | 'ack' | 'durableAt'>, fn: () => Promise<void>): Promise<void> {
    // After a failed resize (fault tests), the guest knows its disk did not grow.
    if (this.onError && op.offset + op.length > this.size) return;
    const full: GuestOp = {
      ...op,
      issue: this.#clock.tick(),
      ack: Number.POSITIVE_INFINITY,
      durableAt: Number.POSITIVE_INFINITY,
    };
    if (this.recording) this.ops.push(full);
    try {
      await fn();
    } catch (err) {
      if (!this.onError) throw err;
      this.onError(err, full);
      return;
    }
    full.ack = this.#clock.tick();
  }

  /** Works out when each recorded request became durable (call after the workload). */
  settle(everyAckDurable = false): void {
    settleOps(this.ops, everyAckDurable ? { writeCache: false, noFlush: false } : this.#policy);
  }
}

/**
 * Sets each request's durableAt: its acknowledgement without a write cache or with FUA, else the
 * acknowledgement of the first flush issued after it was acknowledged; never with noFlush.
 */
export function settleOps(ops: GuestOp[], policy: Pick<GuestPolicy, 'writeCache' | 'noFlush'>): void {
  const flushes = ops.filter((o) => o.kind === 'flush' && Number.isFinite(o.ack));
  for (const op of ops) {
    if (op.kind === 'flush' || !Number.isFinite(op.ack) || policy.noFlush) continue;
    if (!policy.writeCache || op.fua) {
      op.durableAt = op.ack;
      continue;
    }
    let at = Number.POSITIVE_INFINITY;
    for (const f of flushes) if (f.issue > op.ack) at = Math.min(at, f.ack);
    op.durableAt = at;
  }
}

function checkAligned(offset: number, length: number): void {
  if (offset % SECTOR !== 0 || length % SECTOR !== 0) throw new Error('test bug: guest requests are sector-aligned');
}

/**
 * What every sector may hold: built once per workload run from the guest's requests and the
 * content before the recording started; asked per crash state with the crash's time bounds.
 */
export class GuestModel {
  readonly #initial: Buffer;
  readonly #initialSize: number;
  readonly #ops: GuestOp[];
  readonly #policy: GuestPolicy;
  /** Per sector: the indices (in #ops) of the requests that set it, in issue order. */
  readonly #versions: number[][];
  readonly #sizeOps: number[];
  readonly #zero = Buffer.alloc(SECTOR);

  constructor(initial: Buffer, ops: GuestOp[], policy: GuestPolicy) {
    this.#initial = initial;
    this.#initialSize = initial.length;
    this.#ops = ops;
    this.#policy = policy;
    let maxSize = initial.length;
    for (const op of ops) if (op.newSize !== undefined) maxSize = Math.max(maxSize, op.newSize);
    this.#versions = Array.from({ length: Math.ceil(maxSize / SECTOR) }, () => []);
    this.#sizeOps = [];
    ops.forEach((op, i) => {
      if (op.kind === 'flush') return;
      if (op.kind === 'resize') {
        this.#sizeOps.push(i);
        const from = Math.min(op.oldSize!, op.newSize!);
        const to = Math.max(op.oldSize!, op.newSize!);
        for (let s = from / SECTOR; s < to / SECTOR; s++) this.#versions[s]!.push(i);
        return;
      }
      for (let s = op.offset / SECTOR; s < (op.offset + op.length) / SECTOR; s++) this.#versions[s]?.push(i);
    });
  }

  /** The sizes the image may have after a crash in [earliest, latest]. */
  allowedSizes(earliest: number, latest: number): number[] {
    return this.#allowed(this.#sizeOps, earliest, latest).map((i) =>
      i < 0 ? this.#initialSize : this.#ops[i]!.newSize!,
    );
  }

  /**
   * Checks a crash state's guest content (`content.length` is the size the image opened with).
   * Returns the first problems found, empty when everything is allowed.
   */
  check(content: Buffer, earliest: number, latest: number, limit = 5): string[] {
    const problems: string[] = [];
    const sizes = this.allowedSizes(earliest, latest);
    if (!sizes.includes(content.length)) {
      problems.push(`image size ${content.length}, expected one of ${sizes.join(', ')}`);
      return problems;
    }
    const sectors = content.length / SECTOR;
    for (let s = 0; s < sectors && problems.length < limit; s++) {
      const versions = this.#versions[s]!;
      // Never written: only the old content will do (the common case, kept cheap).
      if (versions.length === 0 && this.#initialMatches(content, s)) continue;
      const allowed = this.#allowed(versions, earliest, latest);
      let ok = false;
      for (const v of allowed) {
        if (this.#matches(content, s, v)) {
          ok = true;
          break;
        }
      }
      if (!ok) {
        const actual = content.subarray(s * SECTOR, (s + 1) * SECTOR);
        const names = allowed.map((v) => (v < 0 ? 'old content' : `${this.#ops[v]!.kind} #${this.#ops[v]!.id}`));
        const durable = versions.filter((v) => this.#ops[v]!.durableAt <= latest).map((v) => `#${this.#ops[v]!.id}`);
        problems.push(
          `guest sector ${s} (offset ${s * SECTOR}) holds ${describeSector(actual)}; allowed: ${names.join(', ')}` +
            (durable.length ? ` (durable: ${durable.join(', ')})` : ''),
        );
      }
    }
    return problems;
  }

  /**
   * Version indices allowed after a crash in [earliest, latest]: from the newest durable by
   * `latest` (or the old content, -1) to the newest issued by `earliest`... and by `latest`:
   * a crash at any time in between must be allowed, so the durable bound uses `latest` and the
   * issued bound `earliest`. (The check passes for every time in between iff it passes for both.)
   */
  #allowed(versions: number[], earliest: number, latest: number): number[] {
    let durable = -1;
    for (let k = 0; k < versions.length; k++) if (this.#ops[versions[k]!]!.durableAt <= latest) durable = k;
    const out: number[] = durable < 0 ? [-1] : [];
    for (let k = Math.max(durable, 0); k < versions.length; k++) {
      const op = this.#ops[versions[k]!]!;
      if (op.issue <= earliest) out.push(versions[k]!);
    }
    // The durable version itself is allowed even when issued after `earliest` cannot happen:
    // durable by `latest` means acknowledged, so issued, before `latest`; keep it.
    if (durable >= 0 && !out.includes(versions[durable]!)) out.unshift(versions[durable]!);
    return out;
  }

  /** Whether sector `sector` of `content` holds version `v` (compared in place, no copies). */
  #matches(content: Buffer, sector: number, v: number): boolean {
    if (v < 0) return this.#initialMatches(content, sector);
    const op = this.#ops[v]!;
    const at = sector * SECTOR;
    switch (op.kind) {
      case 'write': {
        const from = at - op.offset;
        return content.compare(op.data!, from, from + SECTOR, at, at + SECTOR) === 0;
      }
      case 'zero':
      case 'resize':
        return this.#isZero(content, at);
      case 'discard':
        return this.#isZero(content, at) || (this.#policy.discardReadsInitial && this.#initialMatches(content, sector));
      default:
        return false;
    }
  }

  #isZero(content: Buffer, at: number): boolean {
    return content.compare(this.#zero, 0, SECTOR, at, at + SECTOR) === 0;
  }

  #initialMatches(content: Buffer, sector: number): boolean {
    const at = sector * SECTOR;
    if (at >= this.#initial.length) return this.#isZero(content, at);
    return content.compare(this.#initial, at, at + SECTOR, at, at + SECTOR) === 0;
  }
}
