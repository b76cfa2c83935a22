/**
 * The replies of one connection in the form its client negotiated: structured reply chunks, or
 * simple replies. Command handlers say what to answer; the codec encodes it and the ReplyWriter
 * sends it.
 */
import { nbdErrno } from '../block/errors.js';
import { DATA_CHUNK_HEADER_SIZE, SIMPLE_REPLY_SIZE } from '../nbd-wire/protocol.js';
import {
  type ExtentList,
  encodeBlockStatusChunk,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeNoneChunk,
  encodeSimpleReply,
  type Request,
  writeDataChunkHeader,
  writeSimpleReply,
} from '../nbd-wire/transmission-codec.js';
import type { ReplyWriter } from './reply-writer.js';

/** The request a reply answers: its cookie, and for reads the offset the data is from. */
export type Answered = Readonly<Pick<Request, 'cookieHi' | 'cookieLo' | 'offset'>>;

export class Replies {
  readonly structured: boolean;
  readonly #writer: ReplyWriter;
  /** The header in front of a read's data: an OFFSET_DATA chunk header or a simple reply. */
  readonly #readHeaderSize: number;

  constructor(writer: ReplyWriter, structured: boolean) {
    this.#writer = writer;
    this.structured = structured;
    this.#readHeaderSize = structured ? DATA_CHUNK_HEADER_SIZE : SIMPLE_REPLY_SIZE;
  }

  /** Success without data (a simple reply, which the spec allows after structured replies too). */
  ok(req: Answered): void {
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
    writeSimpleReply(buf, 0, 0, req.cookieHi, req.cookieLo);
    this.#writer.send(buf);
  }

  /**
   * An error: a structured ERROR chunk with the message when structured replies are on (which
   * READ errors must be then), else a simple reply with the error value.
   */
  error(req: Answered, error: number, message: string): void {
    if (this.structured) this.#writer.send(encodeErrorChunk(req.cookieHi, req.cookieLo, error, message));
    else this.#writer.send(encodeSimpleReply(error, req.cookieHi, req.cookieLo));
  }

  /** The error of a failed backend call: its NBD error value, and `what` failed with its message. */
  failure(req: Answered, what: string, err: unknown): void {
    this.error(req, nbdErrno(err), `${what}: ${errorText(err)}`);
  }

  /** A successful read of zero bytes. */
  emptyRead(req: Answered): void {
    if (this.structured) this.#writer.send(encodeNoneChunk(req.cookieHi, req.cookieLo));
    else this.#writer.send(encodeSimpleReply(0, req.cookieHi, req.cookieLo));
  }

  /**
   * A buffer for a read's reply with room for the header in front of `length` bytes of data, so
   * that the reply leaves as one buffer; dataOf() is where the data goes.
   */
  allocateRead(length: number): Buffer {
    return Buffer.allocUnsafe(this.#readHeaderSize + length);
  }

  dataOf(whole: Buffer): Buffer {
    return whole.subarray(this.#readHeaderSize);
  }

  /**
   * A read's data as one reply. `whole` is the buffer from allocateRead() when the data is in
   * it; `release` runs once the socket no longer needs the data.
   */
  read(req: Answered, data: Buffer, whole: Buffer | undefined, release: (() => void) | undefined): void {
    const header = whole ?? Buffer.allocUnsafe(this.#readHeaderSize);
    if (this.structured) writeDataChunkHeader(header, 0, req.cookieHi, req.cookieLo, req.offset, data.length, true);
    else writeSimpleReply(header, 0, 0, req.cookieHi, req.cookieLo);
    if (whole) this.#writer.send(whole);
    else this.#writer.sendPair(header, data, release);
  }

  /** One OFFSET_DATA chunk of a read whose reply has several. */
  dataChunk(req: Answered, offset: number, data: Buffer, done: boolean, release: (() => void) | undefined): void {
    this.#writer.sendPair(encodeDataChunkHeader(req.cookieHi, req.cookieLo, offset, data.length, done), data, release);
  }

  /** An OFFSET_HOLE chunk: `length` bytes at `offset` read as zeros. */
  holeChunk(req: Answered, offset: number, length: number, done: boolean): void {
    this.#writer.send(encodeHoleChunk(req.cookieHi, req.cookieLo, offset, length, done));
  }

  blockStatusChunk(req: Answered, contextId: number, extents: ExtentList, done: boolean): void {
    this.#writer.send(encodeBlockStatusChunk(req.cookieHi, req.cookieLo, contextId, extents, done));
  }
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
