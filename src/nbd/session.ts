/**
 * One connection in the transmission phase: a parser over the client's byte stream, dispatch of
 * each request to the shared BlockBackend as soon as it is complete (many in flight, replies in
 * completion order), and the reply writer.
 *
 * Hot path: a request header is decoded in place from the socket's chunk; a WRITE payload is a
 * view of that chunk when it lies inside it (else one copy, into an aligned buffer when the
 * image bypasses the page cache); the only await per request is the backend call; replies that
 * complete in the same event-loop turn leave in one write (see #flush).
 *
 * Backpressure: while more than `maxInFlightRequests` requests or `maxInFlightBytes` bytes of
 * READ/WRITE data are in flight, or the client does not read its replies, the socket is paused,
 * so a client can make the server hold at most about one limit plus one request of its data.
 * Across all connections, the server's DataBudget bounds request and reply data together; a
 * request that does not fit waits with its socket paused. While requests wait for it, a client
 * that takes none of its replies, or sends none of a begun write payload, for `stallTimeoutMs`
 * is dropped.
 *
 * Hostile input never throws out of here: a bad magic or an oversized WRITE payload closes this
 * connection (hard disconnect, as the spec allows); everything else gets the spec's error reply.
 */
import type { Duplex } from 'node:stream';
import { nbdErrno } from '../block/errors.js';
import { acquireBuffer, isPooled, releaseBuffer, releaserFor } from './buffers.js';
import type { BudgetHolder, DataBudget } from './data-budget.js';
import type { NbdExport } from './export.js';
import { isZero, queryExtents, zeroRuns } from './extents.js';
import type { SocketInput } from './input.js';
import {
  CHUNK,
  CMD,
  CMD_FLAG,
  CONTEXT_ID_ALLOCATION_DEPTH,
  CONTEXT_ID_BASE_ALLOCATION,
  commandName,
  DATA_CHUNK_HEADER_SIZE,
  NBD_ERR,
  REPLY_FLAG_DONE,
  REQUEST_SIZE,
  SIMPLE_REPLY_SIZE,
} from './protocol.js';
import { ReplyWriter } from './reply-writer.js';
import {
  decodeRequest,
  type ExtentList,
  encodeBlockStatusChunk,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeNoneChunk,
  encodeSimpleReply,
  newRequest,
  writeChunkHeader,
  writeSimpleReply,
} from './transmission-codec.js';

export interface SessionLimits {
  /** Requests in flight at once on one connection. */
  maxInFlightRequests: number;
  /** Bytes of READ and WRITE data in flight at once on one connection. */
  maxInFlightBytes: number;
  /** Reply bytes queued for a client that does not read them. */
  maxUnreadReplies: number;
  /**
   * While requests wait for the server's data budget: a client that takes none of its queued
   * replies, or sends none of a begun write payload, this long is dropped.
   */
  stallTimeoutMs: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  maxInFlightRequests: 256,
  maxInFlightBytes: 64 * 1024 * 1024,
  maxUnreadReplies: 16 * 1024 * 1024,
  stallTimeoutMs: 30_000,
};

export interface SessionOptions {
  export: NbdExport;
  socket: Duplex;
  input: SocketInput;
  structured: boolean;
  baseAllocation: boolean;
  allocationDepth: boolean;
  limits?: Partial<SessionLimits>;
  /** The data budget all the server's sessions share. */
  budget?: DataBudget;
  log?: (message: string) => void;
}

/** NBD_CMD_CACHE reads through a buffer of at most this many bytes. */
const CACHE_CHUNK = 4 * 1024 * 1024;
/**
 * Where every NBD_CMD_CACHE reads to: what it reads is thrown away, so all of them, at once,
 * may share one buffer, and a flood of them holds no memory.
 */
let cacheScratch: Buffer | undefined;

/** The data bytes a request makes the server hold while it runs (its payload or reply). */
function dataBytesOf(type: number, length: number): number {
  return type === CMD.READ || type === CMD.WRITE ? length : 0;
}

/** Reads at least this long are scanned for zero runs sent as holes. */
const SPARSE_SCAN_MIN = 128 * 1024;
/** Granularity of that scan (absolute offsets). */
const SPARSE_BLOCK = 64 * 1024;

type State = 'running' | 'draining' | 'closed';

export class Session implements BudgetHolder {
  readonly #exp: NbdExport;
  readonly #socket: Duplex;
  readonly #input: SocketInput;
  readonly #structured: boolean;
  readonly #base: boolean;
  readonly #depth: boolean;
  readonly #limits: SessionLimits;
  readonly #log: ((message: string) => void) | undefined;
  readonly #request = newRequest();
  readonly #budget: DataBudget | undefined;
  /** Budget bytes held: for requests in flight, and for the next request while its payload arrives. */
  #reserved = 0;
  /** Budget bytes reserved for the request at the head of the input, not yet dispatched. */
  #reservedNext = 0;
  #waitingForBudget = false;
  /** Reply bytes handed to the socket and taken by the client, as last seen, and when that grew. */
  #repliesTaken = 0;
  #repliesTakenAt = performance.now();
  /** Waiting for the rest of a write payload: the bytes queued as last seen, and when that grew. */
  #awaitingPayload = false;
  #payloadQueued = 0;
  #payloadGrewAt = 0;
  #watchdog: NodeJS.Timeout | undefined;

  #state: State = 'running';
  #inFlight = 0;
  #inFlightBytes = 0;
  #paused = false;
  readonly #replies: ReplyWriter;
  /** The client closed its side: serve what it sent, then close. */
  #eof = false;
  #closedResolve!: () => void;
  /** Resolves when the socket is closed and no request is in flight. */
  readonly closed: Promise<void>;
  #socketClosed = false;

  constructor(options: SessionOptions) {
    this.#exp = options.export;
    this.#socket = options.socket;
    this.#input = options.input;
    this.#structured = options.structured;
    this.#base = options.baseAllocation;
    this.#depth = options.allocationDepth;
    this.#limits = { ...DEFAULT_SESSION_LIMITS, ...options.limits };
    this.#log = options.log;
    this.#replies = new ReplyWriter(this.#socket, () => this.#inFlight <= 1);
    this.closed = new Promise((resolve) => (this.#closedResolve = resolve));
    this.#budget = options.budget;
    this.#budget?.addHolder(this);
    this.#socket.on('close', () => {
      this.#socketClosed = true;
      this.#state = 'closed';
      clearInterval(this.#watchdog);
      this.#releaseReservation(this.#reservedNext);
      this.#reservedNext = 0;
      this.#budget?.removeHolder(this);
      this.#maybeClosed();
    });
    this.#socket.on('drain', () => {
      this.#budget?.changed();
      this.#parse();
    });
  }

  unreadBytes(): number {
    return this.#socket.writableLength + this.#replies.queuedBytes;
  }

  reservedBytes(): number {
    return this.#reserved;
  }

  /** Starts serving (bytes the handshake left queued are parsed first). */
  start(): void {
    this.#input.onData(
      () => this.#parse(),
      () => this.#inputEnded(),
    );
    const stall = this.#limits.stallTimeoutMs;
    this.#watchdog = setInterval(() => this.#checkStalled(), Math.max(10, Math.min(5000, stall / 4)));
    this.#watchdog.unref();
    this.#parse();
  }

  /**
   * Drops a client that holds replies or a payload without making progress, while others wait
   * for the data it holds (or always, without a shared budget).
   */
  #checkStalled(): void {
    if (this.#state === 'closed') return;
    const now = performance.now();
    const stall = this.#limits.stallTimeoutMs;
    const taken = this.#replies.handedBytes - this.#socket.writableLength;
    if (taken > this.#repliesTaken || this.unreadBytes() === 0) {
      this.#repliesTaken = taken;
      this.#repliesTakenAt = now;
    }
    const queued = this.#input.queue.length;
    if (!this.#awaitingPayload || this.#paused || queued > this.#payloadQueued) {
      this.#payloadQueued = queued;
      this.#payloadGrewAt = now;
    }
    if (this.#budget && !this.#budget.contended) return;
    if (now - this.#repliesTakenAt > stall) {
      this.#protocolError(`the client took none of its replies for ${stall} ms while others waited`);
    } else if (now - this.#payloadGrewAt > stall) {
      this.#protocolError(`no more of a write payload came for ${stall} ms while others waited`);
    }
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Server shutdown: read no more requests, finish those in flight, then close. */
  shutdown(): Promise<void> {
    if (this.#state === 'running') {
      this.#refuseQueued();
      this.#drain();
    }
    return this.closed;
  }

  /** Answers the complete requests already received but not started with ESHUTDOWN (as the spec asks). */
  #refuseQueued(): void {
    const queue = this.#input.queue;
    const req = this.#request;
    while (queue.length >= REQUEST_SIZE) {
      const [buf, off] = queue.peekSmall(REQUEST_SIZE);
      if (!decodeRequest(buf, off, req) || req.type === CMD.DISC) return;
      let size = REQUEST_SIZE;
      if (req.type === CMD.WRITE) {
        if (req.length > this.#exp.maximumPayload || queue.length < REQUEST_SIZE + req.length) return;
        size += req.length;
      }
      queue.skip(size);
      this.#releaseReservation(this.#reservedNext);
      this.#reservedNext = 0;
      this.#replyError(req.cookieHi, req.cookieLo, NBD_ERR.ESHUTDOWN, 'The server is shutting down');
    }
  }

  /** Hard disconnect now (requests in flight still finish in the backend; their replies are dropped). */
  destroy(): void {
    this.#state = 'closed';
    this.#socket.destroy();
  }

  // --- input ---

  #parse(): void {
    try {
      this.#parseQueued();
    } catch (err) {
      // Nothing here should throw; if something does, it ends this connection, not the server.
      this.#protocolError(`internal error: ${errorText(err)}`);
    }
  }

  #parseQueued(): void {
    const queue = this.#input.queue;
    const req = this.#request;
    const limits = this.#limits;
    while (this.#state === 'running') {
      if (queue.length < REQUEST_SIZE) {
        if (this.#eof) this.#drain();
        break;
      }
      if (this.#inFlight >= limits.maxInFlightRequests || this.#socket.writableLength > limits.maxUnreadReplies) {
        this.#pause(true);
        return;
      }
      const [buf, off] = queue.peekSmall(REQUEST_SIZE);
      if (!decodeRequest(buf, off, req)) {
        this.#protocolError(`invalid request magic 0x${buf.readUInt32BE(off).toString(16)}`);
        return;
      }
      const { type, length } = req;
      const dataBytes = dataBytesOf(type, length);
      if (this.#inFlightBytes > 0 && this.#inFlightBytes + dataBytes > limits.maxInFlightBytes) {
        this.#pause(true);
        return;
      }
      // Oversized requests are refused below without their data being read or held.
      if (dataBytes > 0 && length <= this.#exp.maximumPayload && this.#reservedNext === 0 && this.#budget) {
        if (!this.#budget.tryReserve(dataBytes, this)) {
          this.#pause();
          this.#awaitBudget();
          return;
        }
        this.#waitingForBudget = false;
        this.#reservedNext = dataBytes;
        this.#reserved += dataBytes;
      }
      let payload: Buffer | undefined;
      let pooled = false;
      if (type === CMD.WRITE) {
        if (length > this.#exp.maximumPayload) {
          // The payload cannot be accepted; skipping gigabytes of it would let one client hold
          // the server, so answer and hang up (the spec allows it for such lengths).
          queue.skip(REQUEST_SIZE);
          this.#replyError(req.cookieHi, req.cookieLo, NBD_ERR.EINVAL, this.#tooLong(length));
          this.#protocolError(`write payload of ${length} bytes is larger than the maximum`, true);
          return;
        }
        if (queue.length < REQUEST_SIZE + length) {
          if (this.#eof)
            this.#drain(); // the payload never came
          else this.#awaitingPayload = true;
          break; // wait for the rest of the payload
        }
        this.#awaitingPayload = false;
        queue.skip(REQUEST_SIZE);
        if (this.#exp.alignedBuffers && length > 0) {
          payload = acquireBuffer(length, this.#exp.alignedBuffers);
          pooled = isPooled(payload);
          queue.takeInto(payload, 0, length);
        } else {
          payload = queue.take(length);
        }
      } else {
        queue.skip(REQUEST_SIZE);
      }
      const reserved = this.#reservedNext;
      this.#reservedNext = 0;
      this.#dispatch(req.type, req.flags, req.cookieHi, req.cookieLo, req.offset, length, payload, pooled, reserved);
    }
    this.#resume();
  }

  /** Parses again when it is this session's turn in the shared budget (the socket stays paused). */
  #awaitBudget(): void {
    if (!this.#budget) return;
    this.#waitingForBudget = true;
    this.#budget.wait(this, () => this.#parse());
  }

  #releaseReservation(bytes: number): void {
    if (bytes === 0) return;
    this.#reserved -= bytes;
    this.#budget?.release(bytes);
  }

  /** Stops reading; `forOwnLimits`: for this session's limits, not its turn in the budget. */
  #pause(forOwnLimits = false): void {
    if (forOwnLimits && this.#waitingForBudget) {
      // Waiting for its own requests now: let the next in the budget's queue go first.
      this.#waitingForBudget = false;
      this.#budget?.leave(this);
    }
    if (this.#paused) return;
    this.#paused = true;
    this.#input.pause();
  }

  #resume(): void {
    if (!this.#paused || this.#state !== 'running') return;
    this.#paused = false;
    this.#input.resume();
  }

  #inputEnded(): void {
    this.#eof = true;
    this.#parse();
  }

  /** Stops reading; closes the connection once every reply is out. */
  #drain(): void {
    this.#state = 'draining';
    this.#awaitingPayload = false;
    this.#input.pause();
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#state !== 'draining' || this.#inFlight > 0) return;
    this.#state = 'closed';
    this.#maybeClosed();
    this.#replies.flush();
    // end() sends what is queued, then FIN; destroy if the client never reads it.
    this.#endSoon(5000);
  }

  /**
   * Ends the socket, and destroys it if it is not closed within `ms`. The timer keeps the process
   * alive: with its input paused, the socket is no longer an active handle, and a server that is
   * stopping must not exit before this session is closed.
   */
  #endSoon(ms: number): void {
    this.#socket.end();
    const timer = setTimeout(() => this.#socket.destroy(), ms);
    this.#socket.once('close', () => clearTimeout(timer));
  }

  #maybeClosed(): void {
    if (this.#socketClosed && this.#inFlight === 0) this.#closedResolve();
  }

  #protocolError(message: string, flushFirst = false): void {
    this.#log?.(`Dropping NBD client: ${message}`);
    this.#state = 'closed';
    this.#input.pause();
    if (flushFirst) {
      this.#replies.flush();
      this.#endSoon(1000);
    } else {
      this.#socket.destroy();
    }
  }

  // --- dispatch ---

  #dispatch(
    type: number,
    flags: number,
    cookieHi: number,
    cookieLo: number,
    offset: number,
    length: number,
    payload: Buffer | undefined,
    pooled: boolean,
    reserved: number,
  ): void {
    if (type === CMD.DISC) {
      this.#drain();
      return;
    }
    const exp = this.#exp;
    const size = exp.backend.length;
    let problem: [number, string] | undefined;
    let valid: number = CMD_FLAG.FUA;
    if (type === CMD.READ && this.#structured) valid |= CMD_FLAG.DF;
    if (type === CMD.WRITE_ZEROES) valid |= CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO;
    if (type === CMD.BLOCK_STATUS) valid |= CMD_FLAG.REQ_ONE;
    const writes = type === CMD.WRITE || type === CMD.TRIM || type === CMD.WRITE_ZEROES;
    if ((type === CMD.READ || type === CMD.CACHE) && length > exp.maximumPayload) {
      problem = [NBD_ERR.EINVAL, this.#tooLong(length)];
    } else if (writes && exp.readOnly) {
      problem = [NBD_ERR.EPERM, 'Export is read-only'];
    } else if (offset > size || length > size - offset) {
      problem = [
        type === CMD.WRITE || type === CMD.WRITE_ZEROES ? NBD_ERR.ENOSPC : NBD_ERR.EINVAL,
        `operation past EOF; From: ${offset}, Len: ${length}, Size: ${size}`,
      ];
    } else if ((flags & ~valid) !== 0) {
      problem = [NBD_ERR.EINVAL, `unsupported flags for command ${commandName(type)} (got 0x${flags.toString(16)})`];
    } else if (type > CMD.BLOCK_STATUS) {
      problem = [NBD_ERR.EINVAL, `invalid request type (${type}) received`];
    }
    if (problem) {
      if (pooled && payload) releaseBuffer(payload);
      this.#releaseReservation(reserved);
      this.#replyError(cookieHi, cookieLo, problem[0], problem[1]);
      return;
    }

    const bytes = dataBytesOf(type, length);
    this.#inFlight++;
    this.#inFlightBytes += bytes;
    let op: Promise<void>;
    switch (type) {
      case CMD.READ:
        op = this.#read(cookieHi, cookieLo, offset, length, flags);
        break;
      case CMD.WRITE:
        op = this.#write(cookieHi, cookieLo, offset, payload!, flags, pooled);
        break;
      case CMD.FLUSH:
        op = this.#simple(cookieHi, cookieLo, exp.backend.flush(), 'flush failed');
        break;
      case CMD.TRIM:
        op = this.#simple(cookieHi, cookieLo, this.#trim(offset, length, flags), 'discard failed');
        break;
      case CMD.CACHE:
        op = this.#simple(cookieHi, cookieLo, this.#cache(offset, length), 'caching data failed');
        break;
      case CMD.WRITE_ZEROES:
        op = this.#simple(
          cookieHi,
          cookieLo,
          exp.backend.writeZeroes(offset, length, {
            fua: (flags & CMD_FLAG.FUA) !== 0,
            mayUnmap: exp.discard === 'unmap' && (flags & CMD_FLAG.NO_HOLE) === 0,
            noFallback: (flags & CMD_FLAG.FAST_ZERO) !== 0,
          }),
          'writing to file failed',
        );
        break;
      default:
        op = this.#blockStatus(cookieHi, cookieLo, offset, length, flags);
        break;
    }
    op.then(
      () => this.#finished(bytes, reserved),
      (err: unknown) => {
        // Handlers answer their own errors; reaching here is a bug, which must not kill the server.
        this.#log?.(`Internal error in ${commandName(type)}: ${err instanceof Error ? err.message : String(err)}`);
        this.#replyError(cookieHi, cookieLo, NBD_ERR.EIO, 'internal error');
        this.#finished(bytes, reserved);
      },
    );
  }

  #finished(bytes: number, reserved: number): void {
    this.#inFlight--;
    this.#inFlightBytes -= bytes;
    // A read's data now sits in the reply queue, where unreadBytes() counts it.
    this.#releaseReservation(reserved);
    if (this.#state === 'running') {
      if (this.#paused) this.#parse();
    } else if (this.#state === 'draining') {
      this.#maybeFinish();
    } else {
      this.#maybeClosed();
    }
  }

  #tooLong(length: number): string {
    return `len (${length}) is larger than max len (${this.#exp.maximumPayload})`;
  }

  // --- commands ---

  /** A command whose reply carries no data: success, or the error of `op`. */
  async #simple(cookieHi: number, cookieLo: number, op: Promise<void>, what: string): Promise<void> {
    try {
      await op;
    } catch (err) {
      this.#replyError(cookieHi, cookieLo, nbdErrno(err), `${what}: ${errorText(err)}`);
      return;
    }
    this.#replyOk(cookieHi, cookieLo);
  }

  async #trim(offset: number, length: number, flags: number): Promise<void> {
    const backend = this.#exp.backend;
    // --discard=ignore (qemu-nbd's default): the hint is accepted and dropped.
    if (this.#exp.discard === 'unmap' && length > 0) await backend.discard(offset, length);
    if (flags & CMD_FLAG.FUA) await backend.flush();
  }

  async #cache(offset: number, length: number): Promise<void> {
    // Prefetching only helps when the host page cache is in use.
    if (this.#exp.alignedBuffers || length === 0) return;
    cacheScratch ??= Buffer.allocUnsafe(CACHE_CHUNK);
    const buf = cacheScratch;
    for (let done = 0; done < length; done += buf.length) {
      const n = Math.min(buf.length, length - done);
      await this.#exp.backend.readInto(offset + done, n === buf.length ? buf : buf.subarray(0, n));
    }
  }

  async #write(
    cookieHi: number,
    cookieLo: number,
    offset: number,
    payload: Buffer,
    flags: number,
    pooled: boolean,
  ): Promise<void> {
    const exp = this.#exp;
    const fua = (flags & CMD_FLAG.FUA) !== 0;
    try {
      if (exp.detectZeroes !== 'off' && isZero(payload, 0, payload.length)) {
        await exp.backend.writeZeroes(offset, payload.length, {
          fua,
          mayUnmap: exp.detectZeroes === 'unmap' && exp.discard === 'unmap',
        });
      } else {
        await exp.backend.write(offset, payload, fua ? FUA : NO_FLAGS);
      }
    } catch (err) {
      this.#replyError(cookieHi, cookieLo, nbdErrno(err), `writing to file failed: ${errorText(err)}`);
      return;
    } finally {
      if (pooled) releaseBuffer(payload);
    }
    this.#replyOk(cookieHi, cookieLo);
  }

  async #read(cookieHi: number, cookieLo: number, offset: number, length: number, flags: number): Promise<void> {
    const backend = this.#exp.backend;
    const structured = this.#structured;
    if (flags & CMD_FLAG.FUA) {
      // As qemu-nbd: FUA on a read flushes first.
      try {
        await backend.flush();
      } catch (err) {
        this.#replyError(cookieHi, cookieLo, nbdErrno(err), `flush failed: ${errorText(err)}`);
        return;
      }
    }
    if (length === 0) {
      if (structured) this.#replies.send(encodeNoneChunk(cookieHi, cookieLo));
      else this.#replies.send(encodeSimpleReply(0, cookieHi, cookieLo));
      return;
    }
    // Through the page cache, the data is read straight after room for the reply header, so
    // that the reply is one buffer; direct I/O needs an aligned buffer of its own.
    const prefix = structured ? DATA_CHUNK_HEADER_SIZE : SIMPLE_REPLY_SIZE;
    const whole = this.#exp.alignedBuffers ? undefined : Buffer.allocUnsafe(prefix + length);
    const buf = whole ? whole.subarray(prefix) : acquireBuffer(length, this.#exp.alignedBuffers);
    try {
      await backend.readInto(offset, buf);
    } catch (err) {
      if (!whole) releaseBuffer(buf);
      this.#replyError(cookieHi, cookieLo, nbdErrno(err), `reading from file failed: ${errorText(err)}`);
      return;
    }
    const release = releaserFor(buf);
    if (structured && (flags & CMD_FLAG.DF) === 0) {
      if (isZero(buf, 0, length)) {
        release?.();
        this.#replies.send(encodeHoleChunk(cookieHi, cookieLo, offset, length, true));
        return;
      }
      if (length >= SPARSE_SCAN_MIN) {
        this.#sendSparse(cookieHi, cookieLo, offset, buf, release);
        return;
      }
    }
    const header = whole ?? Buffer.allocUnsafe(prefix);
    if (structured) {
      writeChunkHeader(header, 0, REPLY_FLAG_DONE, CHUNK.OFFSET_DATA, cookieHi, cookieLo, 8 + length);
      header.writeUInt32BE(Math.floor(offset / 0x1_0000_0000), 20);
      header.writeUInt32BE(offset >>> 0, 24);
    } else {
      writeSimpleReply(header, 0, 0, cookieHi, cookieLo);
    }
    if (whole) this.#replies.send(whole);
    else this.#replies.sendPair(header, buf, release);
  }

  /** A read reply in which long runs of zeros go as holes and the rest as data chunks. */
  #sendSparse(
    cookieHi: number,
    cookieLo: number,
    offset: number,
    buf: Buffer,
    release: (() => void) | undefined,
  ): void {
    const end = buf.length;
    const { starts, zeros } = zeroRuns(buf, offset, SPARSE_BLOCK);
    let lastData = -1;
    for (let i = 0; i < starts.length; i++) if (!zeros[i]) lastData = i;
    for (let i = 0; i < starts.length; i++) {
      const start = starts[i]!;
      const stop = i + 1 < starts.length ? starts[i + 1]! : end;
      const last = i + 1 === starts.length;
      if (zeros[i]) {
        this.#replies.send(encodeHoleChunk(cookieHi, cookieLo, offset + start, stop - start, last));
      } else {
        // The buffer goes back to the pool once the last view of it has been written out.
        this.#replies.sendPair(
          encodeDataChunkHeader(cookieHi, cookieLo, offset + start, stop - start, last),
          buf.subarray(start, stop),
          i === lastData ? release : undefined,
        );
      }
    }
    if (lastData < 0) release?.();
  }

  async #blockStatus(cookieHi: number, cookieLo: number, offset: number, length: number, flags: number): Promise<void> {
    if (!this.#base && !this.#depth) {
      this.#replyError(cookieHi, cookieLo, NBD_ERR.EINVAL, 'CMD_BLOCK_STATUS not negotiated');
      return;
    }
    if (length === 0) {
      this.#replyError(cookieHi, cookieLo, NBD_ERR.EINVAL, 'need non-zero length');
      return;
    }
    let extents: { base: ExtentList; depth: ExtentList };
    try {
      extents = await queryExtents(this.#exp.backend, offset, length, (flags & CMD_FLAG.REQ_ONE) !== 0);
    } catch (err) {
      this.#replyError(cookieHi, cookieLo, nbdErrno(err), `can't get block status: ${errorText(err)}`);
      return;
    }
    const { base, depth } = extents;
    if (this.#base)
      this.#replies.send(encodeBlockStatusChunk(cookieHi, cookieLo, CONTEXT_ID_BASE_ALLOCATION, base, !this.#depth));
    if (this.#depth)
      this.#replies.send(encodeBlockStatusChunk(cookieHi, cookieLo, CONTEXT_ID_ALLOCATION_DEPTH, depth, true));
  }

  // --- replies ---

  #replyOk(cookieHi: number, cookieLo: number): void {
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
    writeSimpleReply(buf, 0, 0, cookieHi, cookieLo);
    this.#replies.send(buf);
  }

  /**
   * An error reply: a structured ERROR chunk with the message when structured replies are on
   * (which READ errors must be then), else a simple reply with the error value.
   */
  #replyError(cookieHi: number, cookieLo: number, error: number, message: string): void {
    if (this.#structured) this.#replies.send(encodeErrorChunk(cookieHi, cookieLo, error, message));
    else this.#replies.send(encodeSimpleReply(error, cookieHi, cookieLo));
  }
}

const FUA = { fua: true };
const NO_FLAGS = {};

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
