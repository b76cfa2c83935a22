/**
 * One connection in the transmission phase, as a stream: it reads request frames, admits them
 * under its own limits and the server's data budget, starts each one's command handler as soon
 * as it is complete (many in flight, replies in completion order), and closes in order. What a
 * command does is in commands/, what is refused in request-validation.ts, how replies are
 * encoded in replies.ts.
 *
 * Hot path: a request header is decoded in place from the socket's chunk; a WRITE payload is a
 * view of that chunk when it lies inside it (see takePayload); the only await per request is the
 * backend call; replies that complete in the same event-loop turn leave in one write.
 *
 * Backpressure: while more than `maxInFlightRequests` requests or `maxInFlightBytes` bytes of
 * READ/WRITE data are in flight, or the client does not read its replies, the socket is paused,
 * so a client can make the server hold at most about one limit plus one request of its data.
 * Across all connections the DataBudget bounds request and reply data together: a request that
 * does not fit waits with its socket paused, and meanwhile clients that make no progress are
 * dropped (see StallWatchdog).
 *
 * Hostile input never throws out of here: a bad magic or an oversized WRITE payload closes this
 * connection (hard disconnect, as the spec allows); everything else gets the spec's error reply.
 */
import type { Duplex } from 'node:stream';
import type { SocketInput } from '../nbd-wire/input.js';
import { CMD, commandName, NBD_ERR, REQUEST_SIZE } from '../nbd-wire/protocol.js';
import { decodeRequest, newRequest, type Request } from '../nbd-wire/transmission-codec.js';
import { BudgetShare } from './budget-share.js';
import { releaseBuffer, takePayload } from './buffers.js';
import { type CommandRequest, type Connection, commandRequest } from './commands/command.js';
import { handlerFor } from './commands/handlers.js';
import type { DataBudget } from './data-budget.js';
import { endSoon } from './end-soon.js';
import type { NbdExport } from './export.js';
import { errorText, Replies } from './replies.js';
import { ReplyWriter } from './reply-writer.js';
import { dataBytesOf, payloadTooLong, type RequestProblem, validateRequest } from './request-validation.js';
import { DEFAULT_SESSION_LIMITS, type SessionLimits, SHUTDOWN_GRACE_MS } from './session-limits.js';
import { StallWatchdog } from './stall-watchdog.js';

// Callers that configure sessions import the limits from here.
export type { SessionLimits } from './session-limits.js';

export interface SessionOptions {
  export: NbdExport;
  socket: Duplex;
  input: SocketInput;
  structured: boolean;
  baseAllocation: boolean;
  allocationDepth: boolean;
  dirtyBitmaps?: readonly number[];
  limits?: Partial<SessionLimits>;
  /** The data budget all the server's sessions share. */
  budget?: DataBudget;
  log?: (message: string) => void;
}

type State = 'running' | 'draining' | 'closed';

export class Session {
  readonly #exp: NbdExport;
  readonly #socket: Duplex;
  readonly #input: SocketInput;
  readonly #structured: boolean;
  readonly #limits: SessionLimits;
  readonly #log: ((message: string) => void) | undefined;
  /** The header at the head of the input, decoded in place (reused: most are read once). */
  readonly #request = newRequest();
  readonly #writer: ReplyWriter;
  readonly #replies: Replies;
  /** What command handlers see of this connection. */
  readonly #connection: Connection;
  readonly #watchdog: StallWatchdog;

  readonly #budget: BudgetShare;
  readonly #parseLater = (): void => this.#parse();
  /** The parse scheduled for the next turn of the loop (see #finished). */
  #parseSoon: NodeJS.Immediate | undefined;
  /** The rest of a write payload is awaited. */
  #awaitingPayload = false;

  /** The server is stopping: every request still coming is answered ESHUTDOWN. */
  #shuttingDown = false;
  /** Set once the last request in flight has finished during a shutdown. */
  #graceTimer: NodeJS.Timeout | undefined;
  #state: State = 'running';
  #inFlight = 0;
  #inFlightBytes = 0;
  #paused = false;
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
    this.#limits = { ...DEFAULT_SESSION_LIMITS, ...options.limits };
    this.#log = options.log;
    this.#writer = new ReplyWriter(this.#socket, () => this.#inFlight <= 1);
    this.#replies = new Replies(this.#writer, options.structured);
    this.#connection = {
      export: options.export,
      replies: this.#replies,
      baseAllocation: options.baseAllocation,
      allocationDepth: options.allocationDepth,
      dirtyBitmaps: options.dirtyBitmaps ?? [],
      disconnect: () => this.#drain(),
    };
    this.#watchdog = new StallWatchdog(this.#limits.stallTimeoutMs);
    this.closed = new Promise((resolve) => (this.#closedResolve = resolve));
    this.#budget = new BudgetShare(options.budget, () => this.#unreadBytes());
    this.#socket.on('close', () => {
      this.#socketClosed = true;
      this.#state = 'closed';
      this.#watchdog.stop();
      this.#budget.close();
      this.#maybeClosed();
    });
    this.#socket.on('drain', () => {
      this.#budget.repliesTaken();
      this.#parse();
    });
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Starts serving (bytes the handshake left queued are parsed first). */
  start(): void {
    this.#input.onData(
      () => this.#parse(),
      () => this.#inputEnded(),
    );
    this.#watchdog.start(() => this.#checkStalled());
    this.#parse();
  }

  /** Server shutdown: read no more requests, finish those in flight, then close. */
  shutdown(): Promise<void> {
    if (this.#state === 'running') {
      this.#shuttingDown = true;
      this.#refuseQueued();
      this.#drain();
    }
    return this.closed;
  }

  /** Hard disconnect now (requests in flight still finish in the backend; their replies are dropped). */
  destroy(): void {
    this.#state = 'closed';
    this.#socket.destroy();
  }

  /**
   * Drops a client that holds replies or a payload without making progress, while others wait
   * for the data it holds (or always, without a shared budget).
   */
  #checkStalled(): void {
    if (this.#state === 'closed') return;
    const progress = {
      repliesTaken: this.#writer.handedBytes - this.#socket.writableLength,
      repliesUnread: this.#unreadBytes(),
      awaitingPayload: this.#awaitingPayload && !this.#paused,
      bytesQueued: this.#input.queue.length,
    };
    const stalled = this.#watchdog.stalled(progress, this.#budget.othersWait);
    if (stalled) this.#protocolError(stalled);
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
      this.#budget.releaseNext();
      this.#replies.error(req, NBD_ERR.ESHUTDOWN, 'The server is shutting down');
    }
  }

  // --- reading requests ---

  #parseNow(): void {
    this.#parseSoon = undefined;
    this.#parse();
  }

  #parse(): void {
    if (this.#shuttingDown) {
      // Requests that keep coming are answered ESHUTDOWN while replies can still be sent, then
      // read and dropped (so the client sees our replies, not a reset) until the socket closes.
      if (this.#state === 'draining') this.#refuseQueued();
      else this.#input.queue.skip(this.#input.queue.length);
      return;
    }
    try {
      this.#parseQueued();
    } catch (err) {
      // Nothing here should throw; if something does, it ends this connection, not the server.
      this.#protocolError(`internal error: ${errorText(err)}`);
    }
  }

  /** Dispatches every complete request that the limits admit; pauses reading at the first that they do not. */
  #parseQueued(): void {
    const queue = this.#input.queue;
    const req = this.#request;
    while (this.#state === 'running') {
      if (queue.length < REQUEST_SIZE) {
        if (this.#eof) this.#drain();
        break;
      }
      if (this.#atOwnLimits()) {
        this.#pause(true);
        return;
      }
      const [buf, off] = queue.peekSmall(REQUEST_SIZE);
      if (!decodeRequest(buf, off, req)) {
        this.#protocolError(`invalid request magic 0x${buf.readUInt32BE(off).toString(16)}`);
        return;
      }
      const dataBytes = dataBytesOf(req.type, req.length);
      if (this.#inFlightBytes > 0 && this.#inFlightBytes + dataBytes > this.#limits.maxInFlightBytes) {
        this.#pause(true);
        return;
      }
      // Oversized requests are refused below without their data being read or held.
      const reserve = req.length <= this.#exp.maximumPayload ? dataBytes : 0;
      if (!this.#budget.reserveNext(reserve, this.#parseLater)) {
        this.#pause();
        return;
      }
      if (req.type !== CMD.WRITE) {
        queue.skip(REQUEST_SIZE);
        this.#dispatch(commandRequest(req, undefined, false));
        continue;
      }
      if (req.length > this.#exp.maximumPayload) {
        this.#refuseOversizedWrite(req);
        return;
      }
      if (queue.length < REQUEST_SIZE + req.length) {
        if (this.#eof)
          this.#drain(); // the payload never came
        else this.#awaitingPayload = true;
        break;
      }
      this.#awaitingPayload = false;
      queue.skip(REQUEST_SIZE);
      const { payload, pooled } = takePayload(queue, req.length, this.#exp.alignedBuffers);
      this.#dispatch(commandRequest(req, payload, pooled));
    }
    this.#resume();
  }

  #atOwnLimits(): boolean {
    const limits = this.#limits;
    return this.#inFlight >= limits.maxInFlightRequests || this.#unreadBytes() > limits.maxUnreadReplies;
  }

  /**
   * The payload of this WRITE cannot be accepted; skipping gigabytes of it would let one client
   * hold the server, so answer and hang up (the spec allows it for such lengths).
   */
  #refuseOversizedWrite(req: Request): void {
    this.#input.queue.skip(REQUEST_SIZE);
    const problem = payloadTooLong(req.length, this.#exp);
    this.#replies.error(req, problem.error, problem.message);
    this.#protocolError(`write payload of ${req.length} bytes is larger than the maximum`, true);
  }

  // --- flow control ---

  /** Reply bytes queued for the client and not taken yet. */
  #unreadBytes(): number {
    return this.#socket.writableLength + this.#writer.queuedBytes;
  }

  /** Stops reading; `forOwnLimits`: for this session's limits, not its turn in the budget. */
  #pause(forOwnLimits = false): void {
    // Waiting for its own requests now: let the next in the budget's queue go first.
    if (forOwnLimits) this.#budget.giveUpTurn();
    if (this.#paused) return;
    this.#paused = true;
    this.#input.pause();
  }

  #resume(): void {
    if (!this.#paused || this.#state !== 'running') return;
    this.#paused = false;
    this.#input.resume();
  }

  // --- running requests ---

  #dispatch(req: CommandRequest): void {
    const reserved = this.#budget.takeNext();
    const problem = validateRequest(req, this.#exp, this.#structured);
    if (problem) {
      this.#refuse(req, reserved, problem);
      return;
    }
    const bytes = dataBytesOf(req.type, req.length);
    this.#inFlight++;
    this.#inFlightBytes += bytes;
    handlerFor(req.type)(req, this.#connection).then(
      () => this.#finished(bytes, reserved),
      (err: unknown) => {
        // Handlers answer their own errors; reaching here is a bug, which must not kill the server.
        this.#log?.(`Internal error in ${commandName(req.type)}: ${errorText(err)}`);
        this.#replies.error(req, NBD_ERR.EIO, 'internal error');
        this.#finished(bytes, reserved);
      },
    );
  }

  #refuse(req: CommandRequest, reserved: number, problem: RequestProblem): void {
    if (req.pooled && req.payload) releaseBuffer(req.payload);
    this.#budget.release(reserved);
    this.#replies.error(req, problem.error, problem.message);
  }

  #finished(bytes: number, reserved: number): void {
    this.#inFlight--;
    this.#inFlightBytes -= bytes;
    // A read's data now sits in the reply queue, where the budget counts it as unread.
    this.#budget.release(reserved);
    if (this.#state === 'running') {
      // Not at once: a request whose I/O ran on the loop thread finishes in a microtask; parsing
      // here would start the next in the same turn, and so on, starving replies and other clients.
      this.#parseSoon ??= this.#paused ? setImmediate(() => this.#parseNow()) : undefined;
    } else if (this.#state === 'draining') {
      this.#maybeFinish();
    } else {
      this.#maybeClosed();
    }
  }

  // --- closing ---

  #inputEnded(): void {
    this.#eof = true;
    this.#parse();
  }

  /** Stops reading; closes the connection once every reply is out. */
  #drain(): void {
    this.#state = 'draining';
    this.#awaitingPayload = false;
    if (this.#shuttingDown) this.#input.resume();
    else this.#input.pause();
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#state !== 'draining' || this.#inFlight > 0) return;
    if (this.#shuttingDown && this.#graceTimer === undefined) {
      // A pipelining client has requests on the way: answer them ESHUTDOWN for a moment
      // rather than close on them unanswered.
      this.#graceTimer = setTimeout(() => this.#maybeFinish(), SHUTDOWN_GRACE_MS);
      return;
    }
    this.#state = 'closed';
    this.#maybeClosed();
    this.#writer.flush();
    // end() sends what is queued, then FIN; destroy if the client never reads it (sooner when
    // the server is stopping: a busy client must not hold its exit).
    endSoon(this.#socket, this.#shuttingDown ? 1000 : 5000);
  }

  #maybeClosed(): void {
    if (this.#socketClosed && this.#inFlight === 0) this.#closedResolve();
  }

  #protocolError(message: string, flushFirst = false): void {
    this.#log?.(`Dropping NBD client: ${message}`);
    this.#state = 'closed';
    this.#input.pause();
    if (flushFirst) {
      this.#writer.flush();
      endSoon(this.#socket, 1000);
    } else {
      this.#socket.destroy();
    }
  }
}
