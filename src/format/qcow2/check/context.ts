/**
 * What every part of `check` shares: the host file (read only within its length; what lies past
 * the end reads as zeros, as QEMU reads it), the geometry, the counters qemu-img reports, the
 * message stream, and the reference counting of QEMU's qcow2_inc_refcounts_imrt.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { CheckCounts, RepairMode } from '../../format.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { Qcow2Header } from '../codec/header.js';
import { ReferenceCounts } from './reference-counts.js';

export type { CheckCounts, RepairMode } from '../../format.js';

export function zeroCounts(): CheckCounts {
  return {
    corruptions: 0,
    leaks: 0,
    checkErrors: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    imageEndOffset: 0,
    totalClusters: 0,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
  };
}

/** A check that cannot go on (QEMU's negative return): qemu-img prints "Check failed: <reason>". */
export class CheckAbort extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

/** A metadata range other than L2 tables, which no entry repair may write over. */
interface Range {
  start: number;
  end: number;
  what: string;
}

/** Messages kept per L2 table for repeating, and in all; beyond that only a count is kept. */
const CAPTURE_LINES = 64;
const CAPTURE_TOTAL = 200_000;

/** Formats an offset as QEMU's PRIx64 does (no prefix). */
export function hexBare(value: number): string {
  return value.toString(16);
}

export class CheckContext {
  readonly file: BlockDriver;
  readonly header: Qcow2Header;
  readonly g: Qcow2Geometry;
  readonly cs: number;
  /** BDRV_FIX_LEAKS and BDRV_FIX_ERRORS (a second walk after a rebuild runs without them). */
  fixLeaks: boolean;
  fixErrors: boolean;
  readonly hasDataFile: boolean;
  readonly hasBacking: boolean;
  res: CheckCounts = zeroCounts();
  refs: ReferenceCounts;
  readonly #log: (line: string) => void;
  /** Metadata that entry repairs must not overwrite (QEMU's overlap check). */
  #metadata: Range[] = [];
  /** #metadata sorted by start, and the largest end up to each index (for a binary search). */
  #sorted: { ranges: Range[]; maxEnd: number[] } | undefined;
  #capturedTotal = 0;
  readonly #refblocks = new Set<number>();
  #capture: { lines: string[]; dropped: number } | undefined;

  constructor(opts: {
    file: BlockDriver;
    header: Qcow2Header;
    geometry: Qcow2Geometry;
    repair: RepairMode | undefined;
    hasBacking: boolean;
    log: (line: string) => void;
  }) {
    this.file = opts.file;
    this.header = opts.header;
    this.g = opts.geometry;
    this.cs = opts.geometry.clusterSize;
    this.fixLeaks = opts.repair !== undefined;
    this.fixErrors = opts.repair === 'all';
    this.hasDataFile = opts.geometry.externalDataFile;
    this.hasBacking = opts.hasBacking;
    this.#log = opts.log;
    this.refs = new ReferenceCounts(opts.geometry.refcountOrder, Math.ceil(this.fileLength / this.cs));
  }

  get fileLength(): number {
    return this.file.length();
  }

  log(line: string): void {
    this.#log(line);
    const c = this.#capture;
    if (c) {
      if (c.lines.length < CAPTURE_LINES && this.#capturedTotal < CAPTURE_TOTAL) {
        c.lines.push(line);
        this.#capturedTotal++;
      } else c.dropped++;
    }
  }

  /** Starts keeping the messages logged (those of one L2 table, to repeat for its other users). */
  startCapture(): void {
    this.#capture = { lines: [], dropped: 0 };
  }

  stopCapture(): { lines: string[]; dropped: number } {
    const c = this.#capture ?? { lines: [], dropped: 0 };
    this.#capture = undefined;
    return c;
  }

  /** Reads `length` bytes at `offset`; what lies past the end of the file reads as zeros. */
  async readAt(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    const end = this.fileLength;
    if (Number.isSafeInteger(offset) && offset < end) {
      const n = Math.min(length, end - offset);
      if (n > 0) await this.file.read(offset, buf.subarray(0, n));
    }
    return buf;
  }

  /** Bytes of [offset, offset + length) that lie inside the file. */
  inFile(offset: number, length: number): number {
    if (!Number.isSafeInteger(offset) || offset >= this.fileLength) return 0;
    return Math.min(length, this.fileLength - offset);
  }

  /** QEMU's test for a region that ends a cluster or more past the end of the file. */
  beyondEnd(offset: number, size: number): boolean {
    return !Number.isSafeInteger(offset + size) || offset + size - this.fileLength >= this.cs;
  }

  /** The message and corruption of a reference to a region past the end of the file. */
  reportBeyondEnd(offsetHex: string, size: number): void {
    this.log(
      'ERROR: counting reference for region exceeding the end of the file by one cluster or more: ' +
        `offset ${offsetHex} size 0x${size.toString(16)}`,
    );
    this.res.corruptions++;
  }

  /**
   * qcow2_inc_refcounts_imrt: counts `weight` references to every cluster [offset, offset+size)
   * touches. A region a cluster or more past the end of the file is a corruption and is not
   * counted (`replay`: it was reported already).
   */
  inc(offset: number, size: number, weight = 1, replay = false): void {
    if (size <= 0) return;
    if (this.beyondEnd(offset, size)) {
      if (!replay) this.reportBeyondEnd(`0x${hexBare(offset)}`, size);
      return;
    }
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + size - 1) / this.cs);
    for (let k = first; k <= last; k++) {
      const over = this.refs.add(k, weight);
      for (let i = 0; i < over; i++) {
        this.log(`ERROR: overflow cluster offset=0x${hexBare(k * this.cs)}`);
        this.log(
          'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy ' +
            'if the image cannot be opened for writing',
        );
        this.res.corruptions++;
      }
    }
  }

  /** Records metadata that entry repairs must not overwrite. */
  claim(offset: number, length: number, what: string): void {
    if (length <= 0 || !Number.isSafeInteger(offset)) return;
    this.#metadata.push({ start: offset, end: offset + length, what });
    this.#sorted = undefined;
  }

  claimRefblock(offset: number): void {
    this.#refblocks.add(Math.floor(offset / this.cs));
  }

  /**
   * QEMU's qcow2_pre_write_overlap_check for an entry repair: the name of the metadata that
   * [offset, offset+length) overlaps, other than `own` (the table being repaired), or undefined.
   */
  overlap(offset: number, length: number, own: string): string | undefined {
    const first = Math.floor(offset / this.cs) * this.cs;
    const end = Math.ceil((offset + length) / this.cs) * this.cs;
    if (first < this.cs) return 'qcow2_header';
    const sorted = this.#index();
    // The last range starting before `end`; walk back while an earlier range may still reach `first`.
    let lo = 0;
    let hi = sorted.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted.ranges[mid]!.start < end) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo - 1; k >= 0 && sorted.maxEnd[k]! > first; k--) {
      const r = sorted.ranges[k]!;
      if (r.what !== own && r.end > first) return r.what;
    }
    for (let c = first / this.cs; c < end / this.cs; c++) if (this.#refblocks.has(c)) return 'refcount block';
    return undefined;
  }

  #index(): { ranges: Range[]; maxEnd: number[] } {
    if (!this.#sorted) {
      const ranges = [...this.#metadata].sort((a, b) => a.start - b.start);
      const maxEnd: number[] = [];
      let max = 0;
      for (const r of ranges) {
        max = Math.max(max, r.end);
        maxEnd.push(max);
      }
      this.#sorted = { ranges, maxEnd };
    }
    return this.#sorted;
  }

  /** Writes a metadata repair and makes it durable (QEMU's bdrv_pwrite_sync). */
  async writeSync(offset: number, data: Buffer): Promise<void> {
    await this.file.write(offset, data);
    await this.file.flush();
  }

  /** Throws the check's abort for an unexpected I/O failure. */
  ioFailure(err: unknown, what: string): never {
    this.res.checkErrors++;
    const message = err instanceof VdiskError ? err.message : String(err);
    this.log(`ERROR: ${what}: ${message}`);
    throw new CheckAbort(message);
  }
}
