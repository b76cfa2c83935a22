/**
 * BlockBackend: the one checked entry point to a driver graph. The CLI, the NBD server and the
 * JS API all hold one of these; every request passes here exactly once, so the checks below
 * (bounds, read-only, closed), writethrough emulation, in-flight tracking and counters live
 * nowhere else. The rules the checks apply are in request-checks.ts, which the NBD server's
 * request validation shares.
 */
import type {
  Alignment,
  BitmapInfo,
  BlockDriver,
  DriverCapabilities,
  Extent,
  NodeDescription,
  PersistentBitmaps,
  SnapshotInfo,
  ZeroFlags,
} from './driver.js';
import { VdiskError } from './errors.js';
import type { Preallocation } from './preallocation.js';
import { fitsWithin, isByteCount, isWriteToReadOnly } from './request-checks.js';
import { requestEnded, requestStarted } from './requests-in-flight.js';

export interface BackendOptions {
  /** The guest-visible write cache; off means every write is durable before it completes. */
  writeCache: boolean;
  /** Refuse writes even if the driver graph could do them. */
  readOnly?: boolean;
}

export interface BackendCounters {
  reads: number;
  writes: number;
  zeroWrites: number;
  discards: number;
  flushes: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
}

/** One image of the backing chain below the image a backend holds. */
export interface BackingLayer {
  /** The name as the image above stores it. */
  name: string;
  /** The format the image above names for it, if any. */
  format?: string;
  /** The path it was opened from (absent when the chain was not opened). */
  filename?: string;
  virtualSize?: number;
}

/** What a backend knows about its image: everything tools ask, without reaching into drivers. */
export interface ImageDescription {
  format: string;
  filename: string | undefined;
  virtualSize: number;
  /** The unit of allocation (qcow2's cluster size); absent for raw. */
  clusterSize: number | undefined;
  alignment: Alignment;
  capabilities: DriverCapabilities;
  /** Discard frees whole units of this size; smaller discards may do nothing. */
  discardGranularity: number;
  /** writeCompressed() works (qcow2). */
  compressedWrites: boolean;
  readOnly: boolean;
  dirty: boolean;
  corrupt: boolean;
  backingChain: BackingLayer[];
  snapshots: SnapshotInfo[];
  bitmaps: BitmapInfo[];
  /** Facts only this format has, with QEMU's key names (qemu-img info's format-specific data). */
  formatSpecific?: { type: string; data: Record<string, unknown> };
}

export class BlockBackend {
  /** The top of the driver graph: only the backend talks to it, so every request is checked. */
  readonly #root: BlockDriver;
  readonly writeCache: boolean;
  readonly readOnly: boolean;
  readonly counters: BackendCounters = {
    reads: 0,
    writes: 0,
    zeroWrites: 0,
    discards: 0,
    flushes: 0,
    bytesRead: 0,
    bytesWritten: 0,
    errors: 0,
  };

  #inFlight = 0;
  #drained: (() => void) | undefined;
  #closing: Promise<void> | undefined;

  constructor(root: BlockDriver, options: BackendOptions) {
    this.#root = root;
    this.writeCache = options.writeCache;
    this.readOnly = Boolean(options.readOnly) || root.readOnly;
  }

  get length(): number {
    return this.#root.length();
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Reads `length` bytes at `offset` into a new Buffer. */
  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(offset, buf);
    return buf;
  }

  readInto(offset: number, buf: Buffer): Promise<void> {
    return this.#run(offset, buf.length, false, async () => {
      await this.#root.read(offset, buf);
      this.counters.reads++;
      this.counters.bytesRead += buf.length;
    });
  }

  write(offset: number, buf: Buffer, flags: { fua?: boolean } = {}): Promise<void> {
    return this.#run(offset, buf.length, true, async () => {
      const fua = Boolean(flags.fua) || !this.writeCache;
      await this.#durably(fua, (f) => this.#root.write(offset, buf, f));
      this.counters.writes++;
      this.counters.bytesWritten += buf.length;
    });
  }

  writeZeroes(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    return this.#run(offset, length, true, async () => {
      const fua = Boolean(flags.fua) || !this.writeCache;
      await this.#durably(fua, (f) => this.#root.writeZeroes(offset, length, { ...flags, ...f }));
      this.counters.zeroWrites++;
    });
  }

  /** Writes whole clusters compressed, where the format can (qcow2); ENOTSUP elsewhere. */
  writeCompressed(offset: number, buf: Buffer): Promise<void> {
    return this.#run(offset, buf.length, true, async () => {
      const root = this.#root;
      if (!root.writeCompressed)
        throw new VdiskError('ENOTSUP', `The ${root.driverName} format cannot store compressed data`);
      await root.writeCompressed(offset, buf);
      if (!this.writeCache) await root.flush();
      this.counters.writes++;
      this.counters.bytesWritten += buf.length;
    });
  }

  discard(offset: number, length: number): Promise<void> {
    return this.#run(offset, length, true, async () => {
      await this.#root.discard(offset, length);
      if (!this.writeCache) await this.#root.flush();
      this.counters.discards++;
    });
  }

  /** Drops this layer's data so every range reads from the backing file (after a commit). */
  makeEmpty(): Promise<void> {
    return this.#run(0, 0, true, async () => {
      const root = this.#root;
      if (!root.makeEmpty) throw new VdiskError('ENOTSUP', `The ${root.driverName} format cannot be emptied`);
      await root.makeEmpty();
      if (!this.writeCache) await root.flush();
    });
  }

  flush(): Promise<void> {
    return this.#run(0, 0, false, async () => {
      await this.#root.flush();
      this.counters.flushes++;
    });
  }

  /** The state of the run of bytes starting at `offset`, at most `length` long. */
  blockStatus(offset: number, length: number): Promise<Extent> {
    return this.#run(offset, length, false, () => this.#root.blockStatus(offset, length));
  }

  /**
   * Consecutive extents from `offset` on, as many as the image finds in one bounded step of
   * work (at least one, within `length`).
   */
  blockStatusMany(offset: number, length: number): Promise<Extent[]> {
    return this.#run(offset, length, false, async () => {
      const root = this.#root;
      return root.blockStatusMany ? root.blockStatusMany(offset, length) : [await root.blockStatus(offset, length)];
    });
  }

  /**
   * The block status of [offset, offset+length) (default: the whole image) as consecutive
   * extents, asked for step by step as the caller iterates.
   */
  async *extents(offset = 0, length?: number): AsyncGenerator<Extent> {
    const end = length === undefined ? this.#root.length() : offset + length;
    for (let pos = offset; pos < end; ) {
      const step = await this.blockStatusMany(pos, end - pos);
      for (let i = 0; i < step.length && pos < end; i++) {
        const extent = step[i]!;
        // The first extent answers for `pos`; each later one must start where the one before ended.
        if (!(extent.length > 0) || (i > 0 && extent.offset !== pos)) {
          throw new VdiskError('EIO', `Bad block status at offset ${pos}`);
        }
        const clipped = Math.min(extent.length, end - pos);
        yield { ...extent, offset: pos, length: clipped };
        pos += clipped;
      }
    }
  }

  /** Changes the length; the new tail is allocated as `preallocation` says. */
  truncate(length: number, preallocation: Preallocation = 'off'): Promise<void> {
    checkInteger(length, 'length');
    return this.#run(0, 0, true, async () => {
      if (!this.#root.capabilities.resize) throw new VdiskError('ENOTSUP', 'This image cannot be resized');
      await this.#root.truncate(length, preallocation);
      if (!this.writeCache) await this.#root.flush();
    });
  }

  describe(): ImageDescription {
    const root = this.#root;
    const own: NodeDescription = root.describe?.() ?? { format: root.driverName };
    const backingChain: BackingLayer[] = [];
    for (let layer = own.backing, depth = 0; layer && depth < 64; depth++) {
      const node = layer.node;
      backingChain.push({
        name: layer.name,
        format: layer.format,
        filename: node?.filename,
        virtualSize: node?.length(),
      });
      layer = node?.describe?.()?.backing;
    }
    return {
      format: own.format,
      filename: root.filename,
      virtualSize: root.length(),
      clusterSize: own.clusterSize,
      alignment: root.alignment,
      capabilities: root.capabilities,
      discardGranularity: own.clusterSize ?? root.alignment.request,
      compressedWrites: typeof root.writeCompressed === 'function',
      readOnly: this.readOnly,
      dirty: Boolean(own.dirty),
      corrupt: Boolean(own.corrupt),
      backingChain,
      snapshots: own.snapshots ?? [],
      bitmaps: own.bitmaps ?? [],
      formatSpecific: own.formatSpecific,
    };
  }

  /** The persistent dirty bitmaps of the image, when its format has them. */
  persistentBitmaps(): PersistentBitmaps | undefined {
    if (this.#closing) throw new VdiskError('ESHUTDOWN', 'The image is closed');
    return this.#root.persistentBitmaps?.();
  }

  /** Bytes the image uses on the host, when the host says. */
  allocatedSize(): Promise<number | undefined> {
    return this.#root.allocatedSize?.() ?? Promise.resolve(undefined);
  }

  /** Waits for requests in flight, writes out what is pending and releases the image. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
    try {
      // What was written is on stable storage when close returns, as QEMU's bdrv_close does.
      if (!this.readOnly) await this.#root.flush();
    } finally {
      await this.#root.close();
    }
  }

  /** A write whose durability the caller asked for: native FUA where the graph has it, else a flush. */
  async #durably(fua: boolean, op: (flags: { fua?: boolean }) => Promise<void>): Promise<void> {
    if (!fua) return op({});
    if (this.#root.capabilities.fua) return op({ fua: true });
    await op({});
    await this.#root.flush();
  }

  async #run<T>(offset: number, length: number, writes: boolean, op: () => Promise<T>): Promise<T> {
    if (this.#closing) throw new VdiskError('ESHUTDOWN', 'The image is closed');
    if (isWriteToReadOnly(writes, this.readOnly)) throw new VdiskError('EROFS', 'The image is opened read-only');
    checkInteger(offset, 'offset');
    checkInteger(length, 'length');
    const size = this.#root.length();
    if (!fitsWithin(offset, length, size)) {
      throw new VdiskError(
        'EINVAL',
        `Request past the end of the image: offset ${offset} + length ${length} > image length ${size}`,
      );
    }
    this.#inFlight++;
    requestStarted();
    try {
      return await op();
    } catch (err) {
      this.counters.errors++;
      throw err;
    } finally {
      requestEnded();
      this.#inFlight--;
      if (this.#inFlight === 0 && this.#drained) {
        this.#drained();
        this.#drained = undefined;
      }
    }
  }
}

function checkInteger(value: number, what: string): void {
  if (!isByteCount(value)) {
    throw new VdiskError('EINVAL', `Invalid ${what}: ${value} (must be a non-negative integer below 2^53)`);
  }
}
