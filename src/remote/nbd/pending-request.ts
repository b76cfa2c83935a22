/**
 * One request sent and not yet answered: what was asked (so every chunk of the reply can be
 * checked against it), where a READ's bytes go, the extents a BLOCK_STATUS collected, the first
 * error the server reported, and the promise the caller waits on.
 */
import type { VdiskError } from '../../block/errors.js';
import { CMD } from '../../nbd-wire/protocol.js';
import { ReadCoverage } from './read-coverage.js';

/** One block status descriptor, clipped to the request. */
export interface ExtentRun {
  length: number;
  /** base:allocation's flags (STATE_HOLE, STATE_ZERO). */
  flags: number;
  /** qemu:allocation-depth's value, when the server gave it: 0 unallocated, 1 the export's own image, 2… backing. */
  depth?: number;
}

/** Per metadata context id, the runs from the request's offset on. */
export type BlockStatusResult = Map<number, ExtentRun[]>;

/** One command as the driver asks for it. */
export interface NbdCommand {
  type: number;
  flags: number;
  offset: number;
  length: number;
  /** WRITE: the bytes that follow the header. */
  payload?: Buffer;
  /** READ: where the reply's bytes go. */
  buffer?: Buffer;
}

export class PendingRequest {
  readonly cookie: number;
  readonly type: number;
  readonly offset: number;
  readonly length: number;
  /** READ: where the bytes go (exactly `length` of them). */
  readonly buffer: Buffer | undefined;
  readonly coverage: ReadCoverage | undefined;
  readonly extents: BlockStatusResult = new Map();
  /** Structured chunks received so far. */
  chunks = 0;
  #error: VdiskError | undefined;
  readonly promise: Promise<BlockStatusResult | undefined>;
  #resolve!: (result: BlockStatusResult | undefined) => void;
  #reject!: (err: VdiskError) => void;
  #settled = false;

  constructor(cookie: number, type: number, offset: number, length: number, buffer?: Buffer) {
    this.cookie = cookie;
    this.type = type;
    this.offset = offset;
    this.length = length;
    this.buffer = buffer;
    this.coverage = type === CMD.READ ? new ReadCoverage(length) : undefined;
    this.promise = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  get error(): VdiskError | undefined {
    return this.#error;
  }

  /** The server reported an error for this request; the first one is what the caller sees. */
  fail(err: VdiskError): void {
    this.#error ??= err;
  }

  /** The reply is complete: resolve, or reject with the error the server reported. */
  finish(): void {
    if (this.#error) this.abort(this.#error);
    else if (!this.#settled) {
      this.#settled = true;
      this.#resolve(this.type === CMD.BLOCK_STATUS ? this.extents : undefined);
    }
  }

  /** No reply will come (the connection failed); rejects unless settled already. */
  abort(err: VdiskError): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#reject(err);
  }
}
