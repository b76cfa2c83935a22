/**
 * Reads the server's replies from the bytes received, and checks each one against the request it
 * names before its payload is waited for: a reply for a cookie never sent, a chunk type the
 * request cannot get, a chunk reaching outside the request, a length vdisk would not buffer —
 * each is a protocol error (EPROTO) that ends the connection. Errors the server reports for a
 * request fail that request only.
 */
import type { ByteQueue } from '../../nbd-wire/input.js';
import {
  CHUNK,
  CHUNK_HEADER_SIZE,
  CMD,
  commandName,
  REPLY_FLAG_DONE,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from '../../nbd-wire/protocol.js';
import { readU64Approx } from '../../util/u64.js';
import { protocolError, serverError } from './errors.js';
import type { ExtentRun, PendingRequest } from './pending-request.js';

/** The most descriptors one BLOCK_STATUS chunk may carry (the spec's limit). */
const MAX_EXTENTS = 1 << 20;
/** The largest error chunk: code, message length, a 4096-byte message, an offset. */
const MAX_ERROR_CHUNK = 6 + 4096 + 8;
/** Chunks one reply may have: far more than a READ split into 512-byte pieces needs. */
const MAX_CHUNKS = 1 << 20;

export interface RequestTable {
  /** The request with this cookie, or undefined if none is waiting. */
  get(cookie: number): PendingRequest | undefined;
  /** The reply is complete: forget the request and settle it. */
  finish(request: PendingRequest): void;
}

function isErrorType(type: number): boolean {
  return (type & 0x8000) !== 0;
}

export class ReplyReader {
  readonly #queue: ByteQueue;
  readonly #table: RequestTable;
  readonly #structured: boolean;
  /** The context ids the handshake agreed to. */
  readonly #contexts: ReadonlySet<number>;

  constructor(queue: ByteQueue, table: RequestTable, structured: boolean, contexts: ReadonlySet<number>) {
    this.#queue = queue;
    this.#table = table;
    this.#structured = structured;
    this.#contexts = contexts;
  }

  /** Consumes every complete reply queued; throws EPROTO on anything the protocol forbids. */
  parse(): void {
    while (this.#step()) {
      // one message consumed
    }
  }

  #step(): boolean {
    const q = this.#queue;
    if (q.length < 4) return false;
    const [b, o] = q.peekSmall(4);
    const magic = b.readUInt32BE(o);
    if (magic === SIMPLE_REPLY_MAGIC) return this.#simple();
    if (magic === STRUCTURED_REPLY_MAGIC) {
      if (!this.#structured)
        throw protocolError('a structured reply chunk, but structured replies were not negotiated');
      return this.#chunk();
    }
    throw protocolError(`bad reply magic 0x${magic.toString(16).padStart(8, '0')}`);
  }

  #request(high: number, low: number): PendingRequest {
    // vdisk's cookies are below 2^32: anything else was never sent.
    const request = high === 0 ? this.#table.get(low) : undefined;
    if (!request) {
      throw protocolError(
        `a reply for cookie 0x${high.toString(16)}${low.toString(16).padStart(8, '0')}, which no request waits for`,
      );
    }
    return request;
  }

  #simple(): boolean {
    const q = this.#queue;
    if (q.length < SIMPLE_REPLY_SIZE) return false;
    const [b, o] = q.peekSmall(SIMPLE_REPLY_SIZE);
    const error = b.readUInt32BE(o + 4);
    const request = this.#request(b.readUInt32BE(o + 8), b.readUInt32BE(o + 12));
    if (request.chunks > 0) throw protocolError(`a simple reply in the middle of a structured reply`);
    if (error === 0 && request.type === CMD.READ) {
      if (this.#structured) throw protocolError('a simple reply to a READ, where structured replies were negotiated');
      if (q.length < SIMPLE_REPLY_SIZE + request.length) return false;
      q.skip(SIMPLE_REPLY_SIZE);
      q.takeInto(request.buffer!, 0, request.length);
    } else {
      if (error === 0 && request.type === CMD.BLOCK_STATUS) throw protocolError('a simple reply to BLOCK_STATUS');
      q.skip(SIMPLE_REPLY_SIZE);
      if (error !== 0) request.fail(serverError(error, ''));
    }
    this.#table.finish(request);
    return true;
  }

  #chunk(): boolean {
    const q = this.#queue;
    if (q.length < CHUNK_HEADER_SIZE) return false;
    const [b, o] = q.peekSmall(CHUNK_HEADER_SIZE);
    const flags = b.readUInt16BE(o + 4);
    const type = b.readUInt16BE(o + 6);
    const request = this.#request(b.readUInt32BE(o + 8), b.readUInt32BE(o + 12));
    const length = b.readUInt32BE(o + 16);
    this.#checkLength(request, type, flags, length);
    if (q.length < CHUNK_HEADER_SIZE + length) return false;
    q.skip(CHUNK_HEADER_SIZE);
    if (++request.chunks > MAX_CHUNKS) throw protocolError(`more than ${MAX_CHUNKS} chunks in one reply`);
    if (type === CHUNK.OFFSET_DATA) this.#data(request, length);
    else {
      const payload = q.take(length);
      if (type === CHUNK.OFFSET_HOLE) this.#hole(request, payload);
      else if (type === CHUNK.BLOCK_STATUS) this.#blockStatus(request, payload);
      else if (isErrorType(type)) this.#error(request, type, payload);
    }
    if (flags & REPLY_FLAG_DONE) this.#done(request);
    return true;
  }

  /** Refuses a chunk header before anything of its payload is waited for. */
  #checkLength(request: PendingRequest, type: number, flags: number, length: number): void {
    const name = commandName(request.type);
    const fits = (ok: boolean, what: string) => {
      if (!ok) throw protocolError(`${what} (${length} bytes) in the reply to ${name}`);
    };
    switch (type) {
      case CHUNK.NONE:
        fits(length === 0, 'a NONE chunk with a payload');
        if (!(flags & REPLY_FLAG_DONE)) throw protocolError('a NONE chunk without the DONE flag');
        return;
      case CHUNK.OFFSET_DATA:
        fits(request.type === CMD.READ, 'a data chunk');
        fits(length > 8 && length - 8 <= request.length, 'a data chunk longer than the request');
        return;
      case CHUNK.OFFSET_HOLE:
        fits(request.type === CMD.READ, 'a hole chunk');
        fits(length === 12, 'a hole chunk of the wrong size');
        return;
      case CHUNK.BLOCK_STATUS:
        fits(request.type === CMD.BLOCK_STATUS, 'a block status chunk');
        fits(
          length >= 12 && (length - 4) % 8 === 0 && (length - 4) / 8 <= MAX_EXTENTS,
          'a malformed block status chunk',
        );
        return;
      default:
        if (isErrorType(type)) {
          fits(length >= 6 && length <= MAX_ERROR_CHUNK, 'a malformed error chunk');
          return;
        }
        throw protocolError(`unknown chunk type ${type} in the reply to ${name}`);
    }
  }

  /** Checks that [offset, offset + length) lies in the request and covers new bytes; returns where in it. */
  #place(request: PendingRequest, offset: number, length: number, what: string): number {
    const start = offset - request.offset;
    if (start < 0 || length <= 0 || start + length > request.length) {
      throw protocolError(
        `a ${what} chunk for ${length} bytes at ${offset}, outside the request (${request.length} bytes at ${request.offset})`,
      );
    }
    if (!request.coverage!.add(start, length)) throw protocolError(`${what} chunks that overlap or exceed the request`);
    return start;
  }

  #data(request: PendingRequest, length: number): void {
    const q = this.#queue;
    const head = q.take(8);
    const offset = readU64Approx(head, 0);
    const start = this.#place(request, offset, length - 8, 'data');
    q.takeInto(request.buffer!, start, length - 8);
  }

  #hole(request: PendingRequest, payload: Buffer): void {
    const offset = readU64Approx(payload, 0);
    const size = payload.readUInt32BE(8);
    const start = this.#place(request, offset, size, 'hole');
    request.buffer!.fill(0, start, start + size);
  }

  #blockStatus(request: PendingRequest, payload: Buffer): void {
    const id = payload.readUInt32BE(0);
    if (!this.#contexts.has(id))
      throw protocolError(`block status for metadata context ${id}, which was not negotiated`);
    if (request.extents.has(id)) throw protocolError(`two block status chunks for metadata context ${id}`);
    const runs: ExtentRun[] = [];
    // Descriptors past the request's end are cut off, as QEMU does: some servers round up.
    for (let off = 4, covered = 0; off < payload.length && covered < request.length; off += 8) {
      const length = payload.readUInt32BE(off);
      if (length === 0) throw protocolError('a block status descriptor of length 0');
      const clipped = Math.min(length, request.length - covered);
      runs.push({ length: clipped, flags: payload.readUInt32BE(off + 4) });
      covered += clipped;
    }
    request.extents.set(id, runs);
  }

  #error(request: PendingRequest, type: number, payload: Buffer): void {
    const errno = payload.readUInt32BE(0);
    const messageLength = payload.readUInt16BE(4);
    const extra = type === CHUNK.ERROR_OFFSET ? 8 : 0;
    if (errno === 0) throw protocolError('an error chunk with error 0');
    if (messageLength > payload.length - 6 - extra) throw protocolError('an error chunk whose message overruns it');
    const message = payload.toString('utf8', 6, 6 + messageLength);
    if (type === CHUNK.ERROR_OFFSET) {
      const offset = readU64Approx(payload, 6 + messageLength);
      if (offset < request.offset || offset >= request.offset + request.length) {
        throw protocolError(`an error offset ${offset} outside the request`);
      }
    }
    request.fail(serverError(errno, message));
  }

  /** The last chunk: a successful reply must have answered the whole request. */
  #done(request: PendingRequest): void {
    if (!request.error) {
      if (request.type === CMD.READ && !request.coverage!.complete()) {
        throw protocolError(
          `the reply to a READ of ${request.length} bytes at ${request.offset} did not cover it exactly`,
        );
      }
      if (request.type === CMD.BLOCK_STATUS && request.extents.size === 0) {
        throw protocolError('a reply to BLOCK_STATUS without block status');
      }
    }
    this.#table.finish(request);
  }
}
