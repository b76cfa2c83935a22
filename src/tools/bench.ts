/**
 * `bench`: qemu-img bench. COUNT requests of BUFFER_SIZE bytes, DEPTH of them in flight, from
 * OFFSET onwards by STEP_SIZE (wrapping at the end of the image), reads or (write) writes of a
 * pattern byte, with a flush every FLUSH_INTERVAL requests: once the queue is drained (the
 * default), or beside the requests in flight (drain false). It reports how long the run took;
 * a failed request ends it.
 */
import type { BlockBackend } from '../block/backend.js';
import type { CacheModeName } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { fileName, optionsObject } from './arguments.js';

export interface BenchOptions {
  filename: string;
  format?: FormatName | 'probe';
  /** Default writeback, as qemu-img. */
  cache?: CacheModeName;
  /** Requests in all (default 75000). */
  count?: number;
  /** Requests in flight at once (default 64). */
  depth?: number;
  /** Bytes per request (default 4096). */
  bufferSize?: number;
  /** Bytes between the starts of consecutive requests (default: bufferSize). */
  stepSize?: number;
  /** Where the first request starts (default 0). */
  offset?: number;
  /** Write instead of read (the image is then opened read-write). */
  write?: boolean;
  /** The byte writes are made of (default 0). */
  pattern?: number;
  /** Flush after every this many requests (writes only; default 0, never). */
  flushInterval?: number;
  /** Wait for the requests in flight before each flush (default true). */
  drainOnFlush?: boolean;
  /** Read an image another process holds writable, without the image lock (reads only). */
  forceShare?: boolean;
}

export interface BenchPlan {
  count: number;
  depth: number;
  bufferSize: number;
  stepSize: number;
  offset: number;
  write: boolean;
  flushInterval: number;
}

export interface BenchResult {
  /** Wall-clock seconds from the first request to the last completion. */
  seconds: number;
}

function integer(value: number | undefined, fallback: number, what: string, min: number): number {
  const n = value ?? fallback;
  if (!Number.isSafeInteger(n) || n < min) throw new VdiskError('EINVAL', `Invalid ${what} specified`);
  return n;
}

/** The run the options describe, checked with qemu-img bench's messages. */
export function benchPlan(options: BenchOptions): BenchPlan {
  const o = optionsObject(options, 'bench options');
  const write = Boolean(o.write);
  const depth = integer(o.depth, 64, 'queue depth', 1);
  const bufferSize = integer(o.bufferSize, 4096, 'buffer size', 0);
  const flushInterval = integer(o.flushInterval, 0, 'flush interval', 0);
  if (flushInterval > 0 && !write) throw new VdiskError('EINVAL', '--flush-interval is only available in write tests');
  if (flushInterval > 0 && flushInterval < depth) {
    throw new VdiskError('EINVAL', "Flush interval can't be smaller than depth");
  }
  const step = integer(o.stepSize, 0, 'step size', 0);
  return {
    count: integer(o.count, 75000, 'request count', 0),
    depth,
    bufferSize,
    stepSize: step === 0 ? bufferSize : step,
    offset: integer(o.offset, 0, 'offset', 0),
    write,
    flushInterval,
  };
}

/** "Sending 75000 read requests, …" and the flush line, as qemu-img bench prints them first. */
export function benchHeader(plan: BenchPlan): string {
  let text =
    `Sending ${plan.count} ${plan.write ? 'write' : 'read'} requests, ${plan.bufferSize} bytes each, ` +
    `${plan.depth} in parallel (starting at offset ${plan.offset}, step size ${plan.stepSize})\n`;
  if (plan.flushInterval > 0) text += `Sending flush every ${plan.flushInterval} requests\n`;
  return text;
}

export async function benchImage(options: BenchOptions, onStart?: (plan: BenchPlan) => void): Promise<BenchResult> {
  const plan = benchPlan(options);
  fileName(options.filename, 'image file name');
  const pattern = options.pattern ?? 0;
  if (!Number.isInteger(pattern) || pattern < 0 || pattern > 255) {
    throw new VdiskError('EINVAL', 'Invalid pattern byte specified');
  }
  if (options.forceShare && plan.write) {
    throw new VdiskError('EINVAL', 'force-share=on can only be used with read-only images');
  }
  const { backend } = await openImageWithFormat(options.filename, {
    format: options.format ?? 'probe',
    cache: options.cache ?? 'writeback',
    readOnly: !plan.write,
    forceShare: options.forceShare,
  });
  try {
    onStart?.(plan);
    const buf = Buffer.alloc(plan.bufferSize, plan.write ? pattern : 0);
    const t0 = process.hrtime.bigint();
    await new BenchRun(backend, plan, buf, options.drainOnFlush ?? true).done;
    return { seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
  } finally {
    await backend.close();
  }
}

/** qemu-img bench's request loop: each completion submits more, and flushes when it is time. */
class BenchRun {
  readonly done: Promise<void>;
  #left: number;
  #inFlight = 0;
  #inFlush = false;
  #offset: number;
  #resolve!: () => void;
  #reject!: (err: unknown) => void;
  #failed = false;

  constructor(
    private readonly backend: BlockBackend,
    private readonly plan: BenchPlan,
    private readonly buf: Buffer,
    private readonly drain: boolean,
  ) {
    this.#left = plan.count;
    this.#offset = plan.offset;
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#completed(true);
  }

  #fail(err: unknown, what: string): void {
    if (this.#failed) return;
    this.#failed = true;
    const message = err instanceof Error ? err.message : String(err);
    this.#reject(new VdiskError(err instanceof VdiskError ? err.code : 'EIO', `${what}: ${message}`, { cause: err }));
  }

  /** One request (or a draining flush) completed; `first` starts the run. */
  #completed(first = false): void {
    if (this.#failed) return;
    if (this.#inFlush) {
      this.#inFlush = false;
    } else if (!first && this.#inFlight > 0) {
      const notYetSent = this.#left - this.#inFlight;
      this.#left--;
      this.#inFlight--;
      const interval = this.plan.flushInterval;
      if (interval > 0 && notYetSent % interval === 0) {
        if (this.#inFlight === 0 || !this.drain) {
          const flush = this.backend.flush();
          if (this.drain) {
            this.#inFlush = true;
            flush.then(
              () => this.#completed(),
              (err) => this.#fail(err, 'Failed flush request'),
            );
          } else {
            flush.catch((err) => this.#fail(err, 'Failed flush request'));
          }
        }
        if (this.drain) return;
      }
    }
    if (this.#left === 0) {
      this.#resolve();
      return;
    }
    while (this.#left > this.#inFlight && this.#inFlight < this.plan.depth) {
      const offset = this.#offset;
      this.#inFlight++;
      // qemu-img wraps at the end of the image (and divides by zero on an empty one).
      const length = this.backend.length;
      this.#offset = length > 0 ? (this.#offset + this.plan.stepSize) % length : 0;
      const request = this.plan.write ? this.backend.write(offset, this.buf) : this.backend.readInto(offset, this.buf);
      request.then(
        () => this.#completed(),
        (err) => this.#fail(err, 'Failed request'),
      );
    }
  }
}
