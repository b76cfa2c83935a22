/**
 * The NBD client as a protocol driver: an export on another host (or behind a Unix socket) in
 * the place of a host file, under a format driver, as QEMU's nbd block driver is. What the
 * server advertises decides what the node can do natively (FUA, TRIM, WRITE_ZEROES with
 * FAST_ZERO, FLUSH, block status); BlockBackend emulates the rest as it does for files. Large
 * requests are split at the server's maximum and sent at once; block status answers are kept
 * (extent-cache.ts) so walking the export costs one request per answer.
 */
import type { Alignment, BlockDriver, DriverCapabilities, Extent, WriteFlags, ZeroFlags } from '../../block/driver.js';
import { VdiskError } from '../../block/errors.js';
import type { Preallocation } from '../../block/preallocation.js';
import { CMD, CMD_FLAG, MAX_PAYLOAD, STATE_HOLE, STATE_ZERO, TF } from '../../nbd-wire/protocol.js';
import { checkClientOptions, type NbdClientOptions } from './client-options.js';
import { ConnectionPool } from './connection-pool.js';
import { ExtentCache } from './extent-cache.js';
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
  readonly #statusContext: number | undefined;
  readonly #extents = new ExtentCache();
  #closing: Promise<void> | undefined;

  private constructor(uri: NbdUri, pool: ConnectionPool, readOnly: boolean) {
    const n = pool.negotiated;
    this.uri = uri;
    this.filename = uri.displayName;
    this.#pool = pool;
    this.#flags = n.flags;
    this.#size = n.size;
    this.#maxPayload = Math.min(MAX_PAYLOAD, n.blockSizes?.maximum ?? MAX_PAYLOAD);
    this.#statusContext = n.contexts.baseAllocation;
    this.readOnly = readOnly;
    this.capabilities = {
      fua: this.#has(TF.SEND_FUA),
      discard: this.#has(TF.SEND_TRIM),
      writeZeroes: this.#has(TF.SEND_WRITE_ZEROES),
      blockStatus: this.#statusContext !== undefined,
      resize: false,
    };
    this.alignment = { request: n.blockSizes?.minimum ?? 1, memory: 1 };
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

  async read(offset: number, buf: Buffer): Promise<void> {
    await this.#split(buf.length, this.#maxPayload, (at, len) =>
      this.#pool.request({
        type: CMD.READ,
        flags: 0,
        offset: offset + at,
        length: len,
        buffer: buf.subarray(at, at + len),
      }),
    );
  }

  async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    this.#extents.invalidate();
    const f = this.#fua(flags);
    await this.#split(buf.length, this.#maxPayload, (at, len) =>
      this.#pool.request({
        type: CMD.WRITE,
        flags: f,
        offset: offset + at,
        length: len,
        payload: buf.subarray(at, at + len),
      }),
    );
  }

  async writeZeroes(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    if (!this.capabilities.writeZeroes || (flags.noFallback && !this.#has(TF.SEND_FAST_ZERO))) {
      if (flags.noFallback) throw new VdiskError('ENOTSUP', 'The NBD server cannot write zeroes fast');
      this.#extents.invalidate();
      await this.#split(length, ZEROS.length, (at, len) =>
        this.#pool.request({
          type: CMD.WRITE,
          flags: this.#fua(flags),
          offset: offset + at,
          length: len,
          payload: ZEROS.subarray(0, len),
        }),
      );
      return;
    }
    this.#extents.invalidate();
    let f = this.#fua(flags);
    // Without may-unmap the server must not punch holes (QEMU's rule for its client).
    if (!flags.mayUnmap) f |= CMD_FLAG.NO_HOLE;
    if (flags.noFallback) f |= CMD_FLAG.FAST_ZERO;
    await this.#split(length, this.#maxPayload, (at, len) =>
      this.#pool.request({ type: CMD.WRITE_ZEROES, flags: f, offset: offset + at, length: len }),
    );
  }

  async discard(offset: number, length: number): Promise<void> {
    // A hint: a server without TRIM keeps the data, which is allowed.
    if (!this.capabilities.discard) return;
    this.#extents.invalidate();
    await this.#split(length, MAX_TRIM, (at, len) =>
      this.#pool.request({ type: CMD.TRIM, flags: 0, offset: offset + at, length: len }),
    );
  }

  async flush(): Promise<void> {
    // A server without FLUSH has no write cache to flush.
    if (this.#has(TF.SEND_FLUSH)) await this.#pool.request({ type: CMD.FLUSH, flags: 0, offset: 0, length: 0 });
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    if (this.#statusContext === undefined || length === 0) return this.#extent(offset, length, 0);
    let run = this.#extents.lookup(offset);
    if (!run) {
      const generation = this.#extents.generation;
      const asked = Math.min(length, MAX_STATUS, this.#size - offset);
      const answer = await this.#pool.request({ type: CMD.BLOCK_STATUS, flags: 0, offset, length: asked });
      const runs = answer?.get(this.#statusContext) ?? [];
      this.#extents.store(generation, offset, runs);
      run = runs[0] ?? { length: asked, flags: 0 };
    }
    return this.#extent(offset, Math.min(length, run.length), run.flags);
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

  #extent(offset: number, length: number, flags: number): Extent {
    return {
      offset,
      length,
      allocated: true,
      zero: (flags & STATE_ZERO) !== 0,
      data: (flags & STATE_HOLE) === 0,
      hostOffset: offset,
      hostFile: this.filename,
    };
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
