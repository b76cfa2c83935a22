/**
 * The NBD client as a protocol driver: an export on another host (or behind a Unix socket) in
 * the place of a host file, under a format driver, as QEMU's nbd block driver is. What the
 * server advertises decides what the node can do natively (FUA, TRIM, WRITE_ZEROES with
 * FAST_ZERO, FLUSH, block status); BlockBackend emulates the rest as it does for files. Requests
 * are aligned to the server's minimum block size (block-aligner.ts) and split at its maximum,
 * the pieces sent at once; block status answers (with qemu:allocation-depth's depth when the
 * server offers it) are kept (extent-cache.ts) so walking the export costs one request per answer.
 */
import type { Alignment, BlockDriver, DriverCapabilities, Extent, WriteFlags, ZeroFlags } from '../../block/driver.js';
import { VdiskError } from '../../block/errors.js';
import type { Preallocation } from '../../block/preallocation.js';
import { CMD, CMD_FLAG, MAX_PAYLOAD, STATE_HOLE, STATE_ZERO, TF } from '../../nbd-wire/protocol.js';
import { BlockAligner } from './block-aligner.js';
import { checkClientOptions, type NbdClientOptions } from './client-options.js';
import { ConnectionPool } from './connection-pool.js';
import { combineContexts, ExtentCache } from './extent-cache.js';
import type { ExtentRun } from './pending-request.js';
import { type NbdUri, parseNbdUri } from './uri.js';

/** Zero writes and trims are split at this (QEMU splits trims just below 2 GiB). */
const MAX_TRIM = 1 << 30;
/** The longest range one BLOCK_STATUS asks about. */
const MAX_STATUS = 1 << 30;
/** Zero bytes written where the server has no WRITE_ZEROES. */
const ZEROS = Buffer.alloc(1 << 20);

export interface NbdDriverOptions extends NbdClientOptions {
  readOnly?: boolean;
}

export class NbdDriver implements BlockDriver {
  readonly driverName = 'nbd';
  readonly filename: string;
  readonly capabilities: DriverCapabilities;
  readonly alignment: Alignment;
  readonly readOnly: boolean;
  readonly uri: NbdUri;
  readonly #pool: ConnectionPool;
  readonly #flags: number;
  readonly #size: number;
  readonly #maxPayload: number;
  readonly #contexts: { baseAllocation?: number; allocationDepth?: number };
  readonly #extents = new ExtentCache();
  readonly #aligner: BlockAligner;
  #closing: Promise<void> | undefined;

  private constructor(uri: NbdUri, pool: ConnectionPool, readOnly: boolean) {
    const n = pool.negotiated;
    this.uri = uri;
    this.filename = uri.displayName;
    this.#pool = pool;
    this.#flags = n.flags;
    this.#size = n.size;
    this.#maxPayload = Math.min(MAX_PAYLOAD, n.blockSizes?.maximum ?? MAX_PAYLOAD);
    this.#contexts = n.contexts;
    this.readOnly = readOnly;
    this.capabilities = {
      fua: this.#has(TF.SEND_FUA),
      discard: this.#has(TF.SEND_TRIM),
      writeZeroes: this.#has(TF.SEND_WRITE_ZEROES),
      blockStatus: n.contexts.baseAllocation !== undefined || n.contexts.allocationDepth !== undefined,
      resize: false,
    };
    const minimum = n.blockSizes?.minimum ?? 1;
    this.alignment = { request: minimum, memory: 1 };
    this.#aligner = new BlockAligner(minimum, n.size, {
      read: (offset, buf) => this.#readAligned(offset, buf),
      write: (offset, buf, flags) => this.#writeAligned(offset, buf, flags),
    });
  }

  /** Connects to the export an NBD URI names. */
  static async open(name: string, options: NbdDriverOptions = {}): Promise<NbdDriver> {
    const uri = parseNbdUri(name);
    const checked = checkClientOptions(options);
    let pool: ConnectionPool;
    try {
      pool = await ConnectionPool.open(uri, checked);
    } catch (err) {
      if (!(err instanceof VdiskError)) throw err;
      throw new VdiskError(err.code, `Could not open '${name}': ${err.message}`, { cause: err });
    }
    const exportReadOnly = (pool.negotiated.flags & TF.READ_ONLY) !== 0;
    if (exportReadOnly && !options.readOnly) {
      await pool.close();
      throw new VdiskError('EROFS', `Could not open '${name}': the NBD export is read-only`);
    }
    return new NbdDriver(uri, pool, Boolean(options.readOnly) || exportReadOnly);
  }

  /** Connections in use (more than one only when the server advertises multi-conn). */
  get connections(): number {
    return this.#pool.size;
  }

  length(): number {
    return this.#size;
  }

  read(offset: number, buf: Buffer): Promise<void> {
    return this.#aligner.read(offset, buf);
  }

  async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    this.#extents.invalidate();
    await this.#aligner.write(offset, buf, this.#fua(flags));
  }

  async writeZeroes(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    const fast = this.capabilities.writeZeroes && (!flags.noFallback || this.#has(TF.SEND_FAST_ZERO));
    // Partial blocks can only be zeroed by a read-modify-write: no fast way either.
    if (flags.noFallback && (!fast || !this.#aligner.aligned(offset, length))) {
      throw new VdiskError('ENOTSUP', 'The NBD server cannot write zeroes fast');
    }
    this.#extents.invalidate();
    const end = offset + length;
    const wholeStart = Math.min(this.#aligner.up(offset), end);
    const wholeEnd = Math.max(this.#aligner.down(end), wholeStart);
    if (wholeStart > offset) await this.#zeroBytes(offset, wholeStart - offset, flags);
    if (wholeEnd < end) await this.#zeroBytes(wholeEnd, end - wholeEnd, flags);
    if (wholeEnd === wholeStart) return;
    if (!fast) return this.#zeroBytes(wholeStart, wholeEnd - wholeStart, flags);
    let f = this.#fua(flags);
    // Without may-unmap the server must not punch holes (QEMU's rule for its client).
    if (!flags.mayUnmap) f |= CMD_FLAG.NO_HOLE;
    if (flags.noFallback) f |= CMD_FLAG.FAST_ZERO;
    await this.#aligner.shared(wholeStart, wholeEnd - wholeStart, () =>
      this.#split(wholeEnd - wholeStart, this.#maxPayload, (at, len) =>
        this.#pool.request({ type: CMD.WRITE_ZEROES, flags: f, offset: wholeStart + at, length: len }),
      ),
    );
  }

  async discard(offset: number, length: number): Promise<void> {
    // A hint: a server without TRIM keeps the data, which is allowed; so are partial blocks.
    const start = this.#aligner.up(offset);
    const end = this.#aligner.down(offset + length);
    if (!this.capabilities.discard || end <= start) return;
    this.#extents.invalidate();
    await this.#aligner.shared(start, end - start, () =>
      this.#split(end - start, MAX_TRIM, (at, len) =>
        this.#pool.request({ type: CMD.TRIM, flags: 0, offset: start + at, length: len }),
      ),
    );
  }

  async flush(): Promise<void> {
    // A server without FLUSH has no write cache to flush.
    if (this.#has(TF.SEND_FLUSH)) await this.#pool.request({ type: CMD.FLUSH, flags: 0, offset: 0, length: 0 });
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    if (!this.capabilities.blockStatus || length === 0) return this.#extent(offset, length, { length, flags: 0 });
    let run = this.#extents.lookup(offset);
    if (!run) {
      const generation = this.#extents.generation;
      // Asked from the block boundary below, as the server's minimum block size wants it.
      const from = this.#aligner.down(offset);
      const asked = this.#aligner.up(offset + Math.min(length, MAX_STATUS, this.#size - offset)) - from;
      const answer = await this.#pool.request({ type: CMD.BLOCK_STATUS, flags: 0, offset: from, length: asked });
      const c = this.#contexts;
      const runs = combineContexts(
        c.baseAllocation === undefined ? undefined : (answer?.get(c.baseAllocation) ?? []),
        c.allocationDepth === undefined ? undefined : (answer?.get(c.allocationDepth) ?? []),
      );
      this.#extents.store(generation, from, runs);
      // An answer that does not reach `offset` says nothing about it: data, to the next boundary.
      run = this.#extents.lookup(offset) ?? { length: this.#aligner.up(offset + 1) - offset, flags: 0 };
    }
    return this.#extent(offset, Math.min(length, run.length), run);
  }

  truncate(_length: number, _preallocation: Preallocation): Promise<void> {
    return Promise.reject(new VdiskError('ENOTSUP', 'Cannot resize NBD nodes'));
  }

  /** Lets requests in flight finish, then disconnects cleanly. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#pool.close();
    return this.#closing;
  }

  async allocatedSize(): Promise<number | undefined> {
    return undefined;
  }

  #has(flag: number): boolean {
    return (this.#flags & flag) !== 0;
  }

  #fua(flags: WriteFlags | undefined): number {
    return flags?.fua && this.#has(TF.SEND_FUA) ? CMD_FLAG.FUA : 0;
  }

  /**
   * Without a depth the export is one allocated layer, as QEMU's client sees it. With
   * qemu:allocation-depth, the chain behind the export shows: unallocated ranges (depth 0) are
   * absent, and a range found N layers down the server's chain is at depth N - 1 from here.
   */
  #extent(offset: number, length: number, run: ExtentRun): Extent {
    const extent: Extent = {
      offset,
      length,
      allocated: true,
      zero: (run.flags & STATE_ZERO) !== 0,
      data: (run.flags & STATE_HOLE) === 0,
      hostOffset: offset,
      hostFile: this.filename,
    };
    if (run.depth === undefined) return extent;
    if (run.depth === 0) return { offset, length, allocated: false, zero: extent.zero, data: false, depth: 0 };
    return { ...extent, depth: run.depth - 1 };
  }

  /** Zero bytes written (partial blocks, or a server without WRITE_ZEROES). */
  #zeroBytes(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const f = this.#fua(flags);
    return this.#split(length, ZEROS.length, (at, len) => this.#aligner.write(offset + at, ZEROS.subarray(0, len), f));
  }

  #readAligned(offset: number, buf: Buffer): Promise<void> {
    return this.#split(buf.length, this.#maxPayload, (at, len) =>
      this.#pool.request({
        type: CMD.READ,
        flags: 0,
        offset: offset + at,
        length: len,
        buffer: buf.subarray(at, at + len),
      }),
    );
  }

  #writeAligned(offset: number, buf: Buffer, flags: number): Promise<void> {
    return this.#split(buf.length, this.#maxPayload, (at, len) =>
      this.#pool.request({
        type: CMD.WRITE,
        flags,
        offset: offset + at,
        length: len,
        payload: buf.subarray(at, at + len),
      }),
    );
  }

  /** Runs `op` on pieces of at most `max` bytes of a range `length` long, all at once. */
  async #split(length: number, max: number, op: (at: number, len: number) => Promise<unknown>): Promise<void> {
    if (length <= max) {
      if (length > 0) await op(0, length);
      return;
    }
    const pieces: Array<Promise<unknown>> = [];
    for (let at = 0; at < length; at += max) pieces.push(op(at, Math.min(max, length - at)));
    const results = await Promise.allSettled(pieces);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
