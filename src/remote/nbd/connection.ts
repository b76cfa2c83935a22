/**
 * One connection to an NBD server in the transmission phase: requests are sent as soon as a slot
 * is free (up to MAX_IN_FLIGHT at once over the one socket) and matched to their replies by
 * cookie, in whatever order the server answers. Anything that ends the connection — the server
 * closing it, a protocol error, no answer for `timeoutMs` while requests wait — fails every
 * request in flight with that reason, and every later one; nothing resolves with partial data.
 * close() lets requests in flight finish, sends NBD_CMD_DISC and closes the socket; it is
 * idempotent.
 */
import type { Duplex } from 'node:stream';
import { VdiskError } from '../../block/errors.js';
import type { SocketInput } from '../../nbd-wire/input.js';
import { CMD, REQUEST_MAGIC, REQUEST_SIZE } from '../../nbd-wire/protocol.js';
import { writeU64 } from '../../util/u64.js';
import type { NegotiatedExport } from './handshake.js';
import { type BlockStatusResult, type NbdCommand, PendingRequest } from './pending-request.js';
import { ReplyReader, type RequestTable } from './reply-reader.js';

/** Requests one connection has in flight at most (QEMU's client allows 16). */
export const MAX_IN_FLIGHT = 16;
/** How long close() waits for the server to close its side after NBD_CMD_DISC. */
const DISCONNECT_GRACE_MS = 2000;

export interface ConnectionSettings {
  /** The server's name in messages (the URI as QEMU shows it). */
  name: string;
  /** A connection that gets no byte for this long while requests wait is given up (0: never). */
  timeoutMs: number;
}

export class NbdConnection implements RequestTable {
  readonly negotiated: NegotiatedExport;
  readonly #settings: ConnectionSettings;
  readonly #socket: Duplex;
  readonly #reader: ReplyReader;
  readonly #requests = new Map<number, PendingRequest>();
  #nextCookie = 0;
  #slotWaiters: Array<() => void> = [];
  #failure: VdiskError | undefined;
  #closing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastProgress = 0;
  #lastUnsent = 0;
  /** Called once when the connection fails (not when it is closed). */
  onFailure: ((err: VdiskError) => void) | undefined;

  constructor(socket: Duplex, input: SocketInput, negotiated: NegotiatedExport, settings: ConnectionSettings) {
    this.negotiated = negotiated;
    this.#settings = settings;
    this.#socket = socket;
    const ids = Object.values(negotiated.contexts).filter((id): id is number => id !== undefined);
    this.#reader = new ReplyReader(input.queue, this, negotiated.structuredReplies, new Set(ids));
    input.onData(
      () => {
        this.#lastProgress = Date.now();
        try {
          this.#reader.parse();
        } catch (err) {
          this.#fail(err);
        }
      },
      () => this.#fail(new VdiskError('EIO', 'The server closed the connection')),
    );
    // Errors also reach the input as its end; this listener only keeps them from being thrown.
    socket.on('error', () => {});
  }

  /** Requests sent and not answered. */
  get inFlight(): number {
    return this.#requests.size;
  }

  /** Why the connection is unusable, if it is. */
  get failure(): VdiskError | undefined {
    return this.#failure;
  }

  get usable(): boolean {
    return this.#failure === undefined && this.#closing === undefined;
  }

  /**
   * Sends one request and resolves when its reply is complete: READ data is in `buffer`,
   * BLOCK_STATUS resolves with its extents.
   */
  async request(command: NbdCommand): Promise<BlockStatusResult | undefined> {
    const { type, offset, length } = command;
    await this.#slot();
    const cookie = this.#cookie();
    let header: Buffer;
    try {
      header = requestHeader(type, command.flags, cookie, offset, length);
    } catch (err) {
      this.#releaseSlot();
      throw err;
    }
    const request = new PendingRequest(cookie, type, offset, length, command.buffer);
    this.#requests.set(cookie, request);
    try {
      this.#send(header, command.payload);
      return await request.promise;
    } finally {
      this.#releaseSlot();
    }
  }

  get(cookie: number): PendingRequest | undefined {
    return this.#requests.get(cookie);
  }

  finish(request: PendingRequest): void {
    this.#requests.delete(request.cookie);
    request.finish();
  }

  /** Lets requests in flight finish, says goodbye (NBD_CMD_DISC) and closes. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const waiting = [...this.#requests.values()].map((r) => r.promise.catch(() => {}));
    await Promise.all(waiting);
    this.#stopTimer();
    const socket = this.#socket;
    if (this.#failure === undefined && !socket.destroyed) {
      const closed = new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        setTimeout(() => resolve(), DISCONNECT_GRACE_MS).unref();
      });
      socket.write(requestHeader(CMD.DISC, 0, 0, 0, 0));
      socket.end();
      await closed;
    }
    socket.destroy();
    for (const wake of this.#slotWaiters.splice(0)) wake();
  }

  async #slot(): Promise<void> {
    for (;;) {
      if (this.#closing) throw new VdiskError('ESHUTDOWN', `The connection to ${this.#settings.name} is closed`);
      if (this.#failure) throw this.#failure;
      if (this.#requests.size < MAX_IN_FLIGHT) return;
      await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
    }
  }

  #releaseSlot(): void {
    this.#slotWaiters.shift()?.();
  }

  /** The next cookie no request in flight uses (cookies are 32-bit: the reader refuses others). */
  #cookie(): number {
    do this.#nextCookie = (this.#nextCookie + 1) >>> 0;
    while (this.#nextCookie === 0 || this.#requests.has(this.#nextCookie));
    return this.#nextCookie;
  }

  #send(header: Buffer, payload?: Buffer): void {
    if (this.#requests.size === 1) this.#lastProgress = Date.now();
    const socket = this.#socket;
    socket.cork();
    socket.write(header);
    if (payload) socket.write(payload);
    socket.uncork();
    this.#armTimer();
  }

  #armTimer(): void {
    if (this.#timer || this.#settings.timeoutMs <= 0) return;
    this.#timer = setTimeout(() => this.#checkProgress(), this.#settings.timeoutMs);
    this.#timer.unref();
  }

  #stopTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Gives up when requests wait and the server sent nothing, nor took any of our bytes, for the timeout. */
  #checkProgress(): void {
    this.#timer = undefined;
    if (this.#requests.size === 0 || this.#failure) return;
    const now = Date.now();
    const unsent = this.#socket.writableLength;
    if (unsent !== this.#lastUnsent) {
      this.#lastUnsent = unsent;
      this.#lastProgress = now;
    }
    const idle = now - this.#lastProgress;
    const timeout = this.#settings.timeoutMs;
    if (idle >= timeout) {
      this.#fail(new VdiskError('ETIMEDOUT', `The server did not answer for ${Math.round(timeout / 100) / 10} s`));
      return;
    }
    this.#timer = setTimeout(() => this.#checkProgress(), timeout - idle);
    this.#timer.unref();
  }

  #fail(reason: unknown): void {
    if (this.#failure) return;
    const cause = reason instanceof VdiskError ? reason : new VdiskError('EIO', String(reason));
    // After close() sent NBD_CMD_DISC, the server closing is the expected goodbye.
    const err = new VdiskError(cause.code, `${this.#settings.name}: ${cause.message}`, { cause });
    this.#failure = err;
    this.#stopTimer();
    this.#socket.destroy();
    const requests = [...this.#requests.values()];
    this.#requests.clear();
    for (const request of requests) request.abort(err);
    for (const wake of this.#slotWaiters.splice(0)) wake();
    if (!this.#closing) this.onFailure?.(err);
  }
}

/** A request header (no payload). */
function requestHeader(type: number, flags: number, cookie: number, offset: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(REQUEST_SIZE);
  buf.writeUInt32BE(REQUEST_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(type, 6);
  buf.writeUInt32BE(0, 8);
  buf.writeUInt32BE(cookie, 12);
  writeU64(buf, 16, offset, 'offset');
  buf.writeUInt32BE(length, 24);
  return buf;
}
