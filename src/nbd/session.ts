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
 *
 * Hostile input never throws out of here: a bad magic or an oversized WRITE payload closes this
 * connection (hard disconnect, as the spec allows); everything else gets the spec's error reply.
 */
import type { Duplex } from 'node:stream';
import type { Extent } from '../block/driver.js';
import { nbdErrno, VdiskError } from '../block/errors.js';
import { alignedPool } from '../io/aligned.js';
import { checkProbedRawWrite, type NbdExport } from './export.js';
import type { SocketInput } from './input.js';
import {
  CHUNK,
  CMD,
  CMD_FLAG,
  CONTEXT_ID_ALLOCATION_DEPTH,
  CONTEXT_ID_BASE_ALLOCATION,
  commandName,
  DATA_CHUNK_HEADER_SIZE,
  decodeRequest,
  type ExtentList,
  encodeBlockStatusChunk,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeNoneChunk,
  encodeSimpleReply,
  NBD_ERR,
  newRequest,
  REPLY_FLAG_DONE,
  REQUEST_SIZE,
  SIMPLE_REPLY_SIZE,
  STATE_HOLE,
  STATE_ZERO,
  writeChunkHeader,
  writeSimpleReply,
} from './protocol.js';

export interface SessionLimits {
  /** Requests in flight at once on one connection. */
  maxInFlightRequests: number;
  /** Bytes of READ and WRITE data in flight at once on one connection. */
  maxInFlightBytes: number;
  /** Reply bytes queued for a client that does not read them. */
  maxUnreadReplies: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  maxInFlightRequests: 256,
  maxInFlightBytes: 64 * 1024 * 1024,
  maxUnreadReplies: 16 * 1024 * 1024,
};

export interface SessionOptions {
  export: NbdExport;
  socket: Duplex;
  input: SocketInput;
  structured: boolean;
  baseAllocation: boolean;
  allocationDepth: boolean;
  limits?: Partial<SessionLimits>;
  log?: (message: string) => void;
}

/** Extents one BLOCK_STATUS reply may carry per context (qemu-nbd sends at most 2^17). */
const MAX_EXTENTS = 1 << 17;
/** Backend block-status calls one BLOCK_STATUS request may make (the client asks again for the rest). */
const MAX_STATUS_CALLS = 4096;
/** Reads at least this long are scanned for zero runs sent as holes. */
const SPARSE_SCAN_MIN = 128 * 1024;
/** Granularity of that scan (absolute offsets). */
const SPARSE_BLOCK = 64 * 1024;

type State = 'running' | 'draining' | 'closed';

export class Session {
  readonly #exp: NbdExport;
  readonly #socket: Duplex;
  readonly #input: SocketInput;
  readonly #structured: boolean;
  readonly #base: boolean;
  readonly #depth: boolean;
  readonly #limits: SessionLimits;
  readonly #log: ((message: string) => void) | undefined;
  readonly #request = newRequest();

  #state: State = 'running';
  #inFlight = 0;
  #inFlightBytes = 0;
  #paused = false;
  /** Replies waiting for this turn's flush. */
  #out: Buffer[] = [];
  #outBytes = 0;
  #outDone: Array<() => void> = [];
  #flushScheduled = false;
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
    this.closed = new Promise((resolve) => (this.#closedResolve = resolve));
    this.#socket.on('close', () => {
      this.#socketClosed = true;
      this.#state = 'closed';
      this.#maybeClosed();
    });
    this.#socket.on('drain', () => this.#parse());
  }

  /** Starts serving (bytes the handshake left queued are parsed first). */
  start(): void {
    this.#input.onData(
      () => this.#parse(),
      () => this.#inputEnded(),
    );
    this.#parse();
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
        this.#pause();
        return;
      }
      const [buf, off] = queue.peekSmall(REQUEST_SIZE);
      if (!decodeRequest(buf, off, req)) {
        this.#protocolError(`invalid request magic 0x${buf.readUInt32BE(off).toString(16)}`);
        return;
      }
      const { type, length } = req;
      const dataBytes = type === CMD.READ || type === CMD.WRITE ? length : 0;
      if (this.#inFlightBytes > 0 && this.#inFlightBytes + dataBytes > limits.maxInFlightBytes) {
        this.#pause();
        return;
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
          if (this.#eof) this.#drain(); // the payload never came
          break; // wait for the rest of the payload
        }
        queue.skip(REQUEST_SIZE);
        if (this.#exp.alignedBuffers && length > 0) {
          payload = this.#acquire(length);
          pooled = alignedPool.owns(payload);
          queue.takeInto(payload, 0, length);
        } else {
          payload = queue.take(length);
        }
      } else {
        queue.skip(REQUEST_SIZE);
      }
      this.#dispatch(req.type, req.flags, req.cookieHi, req.cookieLo, req.offset, length, payload, pooled);
    }
    this.#resume();
  }

  #pause(): void {
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
    this.#input.pause();
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#state !== 'draining' || this.#inFlight > 0) return;
    this.#state = 'closed';
    this.#maybeClosed();
    this.#flush();
    // end() sends what is queued, then FIN; destroy if the client never reads it.
    this.#socket.end();
    const timer = setTimeout(() => this.#socket.destroy(), 5000);
    timer.unref();
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
      this.#flush();
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 1000).unref();
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
      if (pooled && payload) alignedPool.release(payload);
      this.#replyError(cookieHi, cookieLo, problem[0], problem[1]);
      return;
    }

    const bytes = type === CMD.READ || type === CMD.WRITE ? length : 0;
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
      () => this.#finished(bytes),
      (err: unknown) => {
        // Handlers answer their own errors; reaching here is a bug, which must not kill the server.
        this.#log?.(`Internal error in ${commandName(type)}: ${err instanceof Error ? err.message : String(err)}`);
        this.#replyError(cookieHi, cookieLo, NBD_ERR.EIO, 'internal error');
        this.#finished(bytes);
      },
    );
  }

  #finished(bytes: number): void {
    this.#inFlight--;
    this.#inFlightBytes -= bytes;
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
    const buf = this.#acquire(Math.min(length, 4 << 20));
    try {
      for (let done = 0; done < length; done += buf.length) {
        const n = Math.min(buf.length, length - done);
        await this.#exp.backend.readInto(offset + done, n === buf.length ? buf : buf.subarray(0, n));
      }
    } finally {
      this.#release(buf);
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
      if (exp.protectProbedRaw) await checkProbedRawWrite(exp, offset, payload);
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
      if (pooled) alignedPool.release(payload);
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
      if (structured) this.#send(encodeNoneChunk(cookieHi, cookieLo));
      else this.#send(encodeSimpleReply(0, cookieHi, cookieLo));
      return;
    }
    // Through the page cache, the data is read straight after room for the reply header, so
    // that the reply is one buffer; direct I/O needs an aligned buffer of its own.
    const prefix = structured ? DATA_CHUNK_HEADER_SIZE : SIMPLE_REPLY_SIZE;
    const whole = this.#exp.alignedBuffers ? undefined : Buffer.allocUnsafe(prefix + length);
    const buf = whole ? whole.subarray(prefix) : this.#acquire(length);
    try {
      await backend.readInto(offset, buf);
    } catch (err) {
      if (!whole) this.#release(buf);
      this.#replyError(cookieHi, cookieLo, nbdErrno(err), `reading from file failed: ${errorText(err)}`);
      return;
    }
    const release = this.#releaser(buf);
    if (structured && (flags & CMD_FLAG.DF) === 0) {
      if (isZero(buf, 0, length)) {
        release?.();
        this.#send(encodeHoleChunk(cookieHi, cookieLo, offset, length, true));
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
    if (whole) this.#send(whole);
    else this.#writeWithData(header, buf, release);
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
    // Segments [start, stop) of the buffer, alternating data and zero.
    const starts: number[] = [];
    const zeros: boolean[] = [];
    let pos = 0;
    while (pos < end) {
      const blockEnd = Math.min(end, pos + SPARSE_BLOCK - ((offset + pos) % SPARSE_BLOCK));
      const zero = isZero(buf, pos, blockEnd);
      if (starts.length === 0 || zeros[zeros.length - 1] !== zero) {
        starts.push(pos);
        zeros.push(zero);
      }
      pos = blockEnd;
    }
    let lastData = -1;
    for (let i = 0; i < starts.length; i++) if (!zeros[i]) lastData = i;
    for (let i = 0; i < starts.length; i++) {
      const start = starts[i]!;
      const stop = i + 1 < starts.length ? starts[i + 1]! : end;
      const last = i + 1 === starts.length;
      if (zeros[i]) {
        this.#send(encodeHoleChunk(cookieHi, cookieLo, offset + start, stop - start, last));
      } else {
        // The buffer goes back to the pool once the last view of it has been written out.
        this.#writeWithData(
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
    const one = (flags & CMD_FLAG.REQ_ONE) !== 0;
    const base: ExtentList = { lengths: [], flags: [], count: 0 };
    const depth: ExtentList = { lengths: [], flags: [], count: 0 };
    const backend = this.#exp.backend;
    const end = offset + length;
    let pos = offset;
    try {
      for (let calls = 0; pos < end && calls < MAX_STATUS_CALLS; calls++) {
        const extent = await backend.blockStatus(pos, end - pos);
        const len = Math.min(extent.length, end - pos);
        if (!(len > 0)) throw new VdiskError('EIO', `empty block status at offset ${pos}`);
        const fullB = addExtent(base, len, (extent.data ? 0 : STATE_HOLE) | (extent.zero ? STATE_ZERO : 0));
        const fullD = addExtent(depth, len, allocationDepth(extent));
        pos += len;
        if (one || fullB || fullD) break;
      }
    } catch (err) {
      if (pos === offset) {
        this.#replyError(cookieHi, cookieLo, nbdErrno(err), `can't get block status: ${errorText(err)}`);
        return;
      }
      // Report what is known; the client asks again from where the answer ends.
    }
    if (this.#base)
      this.#send(encodeBlockStatusChunk(cookieHi, cookieLo, CONTEXT_ID_BASE_ALLOCATION, base, !this.#depth));
    if (this.#depth) this.#send(encodeBlockStatusChunk(cookieHi, cookieLo, CONTEXT_ID_ALLOCATION_DEPTH, depth, true));
  }

  // --- replies ---

  #replyOk(cookieHi: number, cookieLo: number): void {
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
    writeSimpleReply(buf, 0, 0, cookieHi, cookieLo);
    this.#send(buf);
  }

  /**
   * An error reply: a structured ERROR chunk with the message when structured replies are on
   * (which READ errors must be then), else a simple reply with the error value.
   */
  #replyError(cookieHi: number, cookieLo: number, error: number, message: string): void {
    if (this.#structured) this.#send(encodeErrorChunk(cookieHi, cookieLo, error, message));
    else this.#send(encodeSimpleReply(error, cookieHi, cookieLo));
  }

  /**
   * Sends reply bytes. When this request is the only one in flight (queue depth 1), they are
   * written at once; otherwise everything queued in one event-loop turn leaves together on
   * setImmediate: small totals as one copied buffer (one write, no cork), larger ones as one
   * corked writev of the pieces. `done` runs once the socket no longer needs `buf`.
   */
  #send(buf: Buffer, done?: () => void): void {
    const socket = this.#socket;
    if (!socket.writable) {
      done?.();
      return;
    }
    if (this.#inFlight <= 1 && !this.#flushScheduled) {
      // Nothing to batch with: an extra event-loop turn would only add latency.
      socket.write(buf, done);
      return;
    }
    this.#out.push(buf);
    this.#outBytes += buf.length;
    if (done) this.#outDone.push(done);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushLater);
    }
  }

  readonly #flushLater = (): void => this.#flush();

  #writeWithData(header: Buffer, data: Buffer, done: (() => void) | undefined): void {
    const direct = this.#inFlight <= 1 && !this.#flushScheduled && this.#socket.writable;
    if (direct) this.#socket.cork(); // header and data in one writev
    this.#send(header);
    this.#send(data, done);
    if (direct) this.#socket.uncork();
  }

  #flush(): void {
    this.#flushScheduled = false;
    const out = this.#out;
    const total = this.#outBytes;
    const done = this.#outDone;
    if (out.length === 0) return;
    this.#out = [];
    this.#outBytes = 0;
    this.#outDone = [];
    const socket = this.#socket;
    if (!socket.writable) {
      for (const fn of done) fn();
      return;
    }
    if (out.length === 1) {
      socket.write(out[0]!, done.length > 0 ? () => runAll(done) : undefined);
      return;
    }
    if (total <= COALESCE_LIMIT) {
      socket.write(Buffer.concat(out, total));
      runAll(done); // the bytes were copied
      return;
    }
    socket.cork();
    const last = out.length - 1;
    for (let i = 0; i < last; i++) socket.write(out[i]!);
    if (done.length > 0) socket.write(out[last]!, () => runAll(done));
    else socket.write(out[last]!);
    socket.uncork();
  }

  // --- buffers ---

  #acquire(length: number): Buffer {
    if (this.#exp.alignedBuffers) {
      try {
        return alignedPool.acquire(length);
      } catch {
        // The pool is exhausted (many large requests at once): an ordinary buffer still works.
      }
    }
    return Buffer.allocUnsafe(length);
  }

  #release(buf: Buffer): void {
    if (alignedPool.owns(buf)) alignedPool.release(buf);
  }

  /** A callback that gives `buf` back to the pool once the socket is done with it, if it is pooled. */
  #releaser(buf: Buffer): (() => void) | undefined {
    if (!alignedPool.owns(buf)) return undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      alignedPool.release(buf);
    };
  }
}

/** Replies queued in one turn up to this many bytes are copied into one buffer and written at once. */
const COALESCE_LIMIT = 64 * 1024;

function runAll(fns: ReadonlyArray<() => void>): void {
  for (const fn of fns) fn();
}
const FUA = { fua: true };
const NO_FLAGS = {};

/** True when buf[start, end) is all zero bytes (one native compare of the range with itself shifted). */
export function isZero(buf: Buffer, start: number, end: number): boolean {
  if (end <= start) return true;
  if (buf[start] !== 0) return false;
  return buf.compare(buf, start, end - 1, start + 1, end) === 0;
}

/**
 * The qemu:allocation-depth value of an extent: 0 when no layer of the chain allocates the
 * range, else 1 for the image itself, 2 for its backing file, and so on.
 */
export function allocationDepth(extent: Extent): number {
  return extent.allocated ? (extent.depth ?? 0) + 1 : 0;
}

/** Appends an extent, merging it into the previous one when the flags agree. True when the list is full. */
function addExtent(list: ExtentList, length: number, flags: number): boolean {
  const last = list.count - 1;
  if (last >= 0 && list.flags[last] === flags && list.lengths[last]! + length <= 0xffffffff) {
    list.lengths[last] = list.lengths[last]! + length;
    return false;
  }
  list.lengths.push(length);
  list.flags.push(flags);
  list.count++;
  return list.count >= MAX_EXTENTS;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
