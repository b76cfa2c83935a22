/**
 * A protocol driver that records every host operation an image makes: writes (with their
 * bytes), write-zeroes, discards, truncates and flushes, each with the logical time it was
 * issued and the time it completed. From such a log, crash-states.ts builds the states a real
 * disk with a volatile write cache could be left in by a power loss.
 *
 * The bytes go to a FlatDriver at once (that is the page cache: reads see them); what is durable
 * is only decided later, from the flush boundaries. With `jitter`, operations complete after a
 * few turns of the event loop, so concurrent requests complete out of order, as they do on a
 * real host.
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  WriteFlags,
  ZeroFlags,
} from '../../../src/block/driver.js';
import type { Preallocation } from '../../../src/block/preallocation.js';
import { FlatDriver } from './flat-driver.js';

export type HostOp =
  | {
      kind: 'write';
      offset: number;
      length: number;
      /** undefined: the range reads as zeros afterwards (write-zeroes, discard). */
      data: Buffer | undefined;
      /** A discard or hole punch: never extends the file. */
      punch: boolean;
      start: number;
      end: number;
    }
  | { kind: 'flush'; start: number; end: number }
  | { kind: 'truncate'; length: number; start: number; end: number };

export interface RecordingOptions {
  name?: string;
  /** cache=unsafe: flushes do nothing (they are counted, not logged as barriers). */
  noFlush?: boolean;
  /** Turns of the event loop before an operation completes (0: at once). */
  jitter?: () => number;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

export class RecordingDriver implements BlockDriver {
  readonly driverName = 'file';
  readonly filename: string | undefined;
  readonly capabilities: DriverCapabilities = {
    fua: true,
    discard: true,
    writeZeroes: true,
    blockStatus: true,
    resize: true,
  };
  readonly alignment: Alignment = { request: 1, memory: 1 };
  readonly readOnly = false;
  readonly flat: FlatDriver;
  readonly log: HostOp[] = [];
  /** The file's bytes when recording started (everything before is durable). */
  base: Buffer = Buffer.alloc(0);
  recording = false;
  ignoredFlushes = 0;
  #clock = 0;
  readonly #options: RecordingOptions;

  constructor(content: Buffer, options: RecordingOptions = {}) {
    this.flat = new FlatDriver(content, { name: options.name });
    this.filename = options.name;
    this.#options = options;
  }

  /** Starts the log here: the current bytes are the durable base. */
  startRecording(): void {
    this.base = Buffer.from(this.flat.bytes());
    this.log.length = 0;
    this.recording = true;
  }

  /** The logical clock: every event takes the next value. Guest events use it too. */
  tick(): number {
    return ++this.#clock;
  }

  get now(): number {
    return this.#clock;
  }

  length(): number {
    return this.flat.length();
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    this.flat.readSync(offset, buf);
    await this.#delay();
  }

  async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    const op = this.#begin({ kind: 'write', offset, length: buf.length, data: Buffer.from(buf), punch: false });
    this.flat.writeSync(offset, buf);
    await this.#delay();
    this.#end(op);
    if (flags?.fua) await this.flush();
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    const op = this.#begin({ kind: 'write', offset, length, data: undefined, punch: false });
    this.flat.zeroSync(offset, length, true);
    await this.#delay();
    this.#end(op);
    if (flags?.fua) await this.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    const len = Math.max(0, Math.min(length, this.flat.length() - offset));
    if (len === 0) return;
    const op = this.#begin({ kind: 'write', offset, length: len, data: undefined, punch: true });
    this.flat.zeroSync(offset, len, false);
    await this.#delay();
    this.#end(op);
  }

  async flush(): Promise<void> {
    if (this.#options.noFlush) {
      this.ignoredFlushes++;
      await this.#delay();
      return;
    }
    const op = this.#begin({ kind: 'flush' });
    await this.#delay();
    this.#end(op);
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    return { offset, length, allocated: true, data: true, zero: false, hostOffset: offset, hostFile: this.filename };
  }

  async truncate(length: number, _preallocation: Preallocation): Promise<void> {
    const op = this.#begin({ kind: 'truncate', length });
    this.flat.truncateSync(length);
    await this.#delay();
    this.#end(op);
  }

  async close(): Promise<void> {}

  async allocatedSize(): Promise<number> {
    return this.flat.length();
  }

  // biome-ignore lint/suspicious/noExplicitAny: the op without its times
  #begin(partial: any): HostOp {
    const op = { ...partial, start: this.tick(), end: Number.POSITIVE_INFINITY } as HostOp;
    if (this.recording) this.log.push(op);
    return op;
  }

  #end(op: HostOp): void {
    op.end = this.tick();
  }

  async #delay(): Promise<void> {
    const n = this.#options.jitter?.() ?? 0;
    for (let i = 0; i < n; i++) await tick();
  }
}
