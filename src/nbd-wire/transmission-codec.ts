/**
 * Pure encoding and decoding of the transmission phase: request headers (decoded in place into
 * a reused object) and simple replies and structured reply chunks.
 *
 * 64-bit fields: offsets in requests are read as two 32-bit halves into a number that is exact
 * below 2^53 and rounded (order-preserving) above, which is all a bounds check needs; cookies
 * are opaque and kept as their two halves.
 */
import { readU64Approx, writeU64 } from '../util/u64.js';
import {
  CHUNK,
  CHUNK_HEADER_SIZE,
  DATA_CHUNK_HEADER_SIZE,
  encodeString,
  HOLE_CHUNK_SIZE,
  REPLY_FLAG_DONE,
  REQUEST_MAGIC,
  REQUEST_SIZE,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

/** A request header as decoded; reused between requests to avoid allocation. */
export interface Request {
  flags: number;
  type: number;
  /** The client's 64-bit cookie (handle), as two halves echoed in the reply. */
  cookieHi: number;
  cookieLo: number;
  /** Exact below 2^53; above that, a larger number than any export size (bounds checks fail). */
  offset: number;
  length: number;
}

export function newRequest(): Request {
  return { flags: 0, type: 0, cookieHi: 0, cookieLo: 0, offset: 0, length: 0 };
}

/** Decodes the 28-byte request header at `off` into `out`; false when the magic is wrong. */
export function decodeRequest(buf: Buffer, off: number, out: Request): boolean {
  if (buf.readUInt32BE(off) !== REQUEST_MAGIC) return false;
  out.flags = buf.readUInt16BE(off + 4);
  out.type = buf.readUInt16BE(off + 6);
  out.cookieHi = buf.readUInt32BE(off + 8);
  out.cookieLo = buf.readUInt32BE(off + 12);
  out.offset = readU64Approx(buf, off + 16);
  out.length = buf.readUInt32BE(off + 24);
  return true;
}

/** Encodes a request header (for tests and clients). `offset` may be given as a bigint for huge values. */
export function encodeRequest(
  type: number,
  flags: number,
  cookie: bigint,
  offset: number | bigint,
  length: number,
  payload?: Buffer,
): Buffer {
  const buf = Buffer.allocUnsafe(REQUEST_SIZE + (payload?.length ?? 0));
  buf.writeUInt32BE(REQUEST_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(type, 6);
  buf.writeBigUInt64BE(cookie, 8);
  buf.writeBigUInt64BE(BigInt(offset), 16);
  buf.writeUInt32BE(length >>> 0, 24);
  payload?.copy(buf, REQUEST_SIZE);
  return buf;
}

/** A simple reply header (data, if any, follows it). */
export function writeSimpleReply(buf: Buffer, off: number, error: number, cookieHi: number, cookieLo: number): void {
  buf.writeUInt32BE(SIMPLE_REPLY_MAGIC, off);
  buf.writeUInt32BE(error, off + 4);
  buf.writeUInt32BE(cookieHi, off + 8);
  buf.writeUInt32BE(cookieLo, off + 12);
}

export function encodeSimpleReply(error: number, cookieHi: number, cookieLo: number): Buffer {
  const buf = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  writeSimpleReply(buf, 0, error, cookieHi, cookieLo);
  return buf;
}

/** A structured reply chunk header; `length` is the payload that follows. */
export function writeChunkHeader(
  buf: Buffer,
  off: number,
  flags: number,
  type: number,
  cookieHi: number,
  cookieLo: number,
  length: number,
): void {
  buf.writeUInt32BE(STRUCTURED_REPLY_MAGIC, off);
  buf.writeUInt16BE(flags, off + 4);
  buf.writeUInt16BE(type, off + 6);
  buf.writeUInt32BE(cookieHi, off + 8);
  buf.writeUInt32BE(cookieLo, off + 12);
  buf.writeUInt32BE(length, off + 16);
}

/** NBD_REPLY_TYPE_NONE with DONE: a successful reply without data. */
export function encodeNoneChunk(cookieHi: number, cookieLo: number): Buffer {
  const buf = Buffer.allocUnsafe(CHUNK_HEADER_SIZE);
  writeChunkHeader(buf, 0, REPLY_FLAG_DONE, CHUNK.NONE, cookieHi, cookieLo, 0);
  return buf;
}

/**
 * The header of an OFFSET_DATA chunk carrying `dataLength` bytes read at `offset`, written at
 * `off` (the data follows it).
 */
export function writeDataChunkHeader(
  buf: Buffer,
  off: number,
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataLength: number,
  done: boolean,
): void {
  writeChunkHeader(buf, off, done ? REPLY_FLAG_DONE : 0, CHUNK.OFFSET_DATA, cookieHi, cookieLo, 8 + dataLength);
  writeU64(buf, off + CHUNK_HEADER_SIZE, offset, 'offset');
}

/** The same header in a buffer of its own. */
export function encodeDataChunkHeader(
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataLength: number,
  done: boolean,
): Buffer {
  const buf = Buffer.allocUnsafe(DATA_CHUNK_HEADER_SIZE);
  writeDataChunkHeader(buf, 0, cookieHi, cookieLo, offset, dataLength, done);
  return buf;
}

/** An OFFSET_HOLE chunk: `length` bytes at `offset` read as zeros. */
export function encodeHoleChunk(
  cookieHi: number,
  cookieLo: number,
  offset: number,
  length: number,
  done: boolean,
): Buffer {
  const buf = Buffer.allocUnsafe(HOLE_CHUNK_SIZE);
  writeChunkHeader(buf, 0, done ? REPLY_FLAG_DONE : 0, CHUNK.OFFSET_HOLE, cookieHi, cookieLo, 12);
  writeU64(buf, CHUNK_HEADER_SIZE, offset, 'offset');
  buf.writeUInt32BE(length, 28);
  return buf;
}

/** An ERROR chunk with DONE: error value and message. */
export function encodeErrorChunk(cookieHi: number, cookieLo: number, error: number, message: string): Buffer {
  const msg = encodeString(message);
  const buf = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + 6 + msg.length);
  writeChunkHeader(buf, 0, REPLY_FLAG_DONE, CHUNK.ERROR, cookieHi, cookieLo, 6 + msg.length);
  buf.writeUInt32BE(error, CHUNK_HEADER_SIZE);
  buf.writeUInt16BE(msg.length, CHUNK_HEADER_SIZE + 4);
  msg.copy(buf, CHUNK_HEADER_SIZE + 6);
  return buf;
}

/** A list of extents: lengths and flags in parallel arrays (`count` of them are used). */
export interface ExtentList {
  lengths: number[];
  flags: number[];
  count: number;
}

/** A BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatusChunk(
  cookieHi: number,
  cookieLo: number,
  contextId: number,
  extents: ExtentList,
  done: boolean,
): Buffer {
  const payload = 4 + 8 * extents.count;
  const buf = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + payload);
  writeChunkHeader(buf, 0, done ? REPLY_FLAG_DONE : 0, CHUNK.BLOCK_STATUS, cookieHi, cookieLo, payload);
  buf.writeUInt32BE(contextId, CHUNK_HEADER_SIZE);
  let off = CHUNK_HEADER_SIZE + 4;
  for (let i = 0; i < extents.count; i++) {
    buf.writeUInt32BE(extents.lengths[i]!, off);
    buf.writeUInt32BE(extents.flags[i]! >>> 0, off + 4);
    off += 8;
  }
  return buf;
}

/** One reply message as a client sees it (for tests and clients). */
export type DecodedReply =
  | { kind: 'simple'; error: number; cookie: bigint; size: number }
  | { kind: 'chunk'; flags: number; type: number; cookie: bigint; payload: Buffer; size: number };

/**
 * Decodes the reply at `off`. Simple replies carry no data here: a client that knows a read
 * succeeded takes the data that follows itself. Returns undefined if the bytes are incomplete,
 * and throws on a bad magic.
 */
export function decodeReply(buf: Buffer, off = 0): DecodedReply | undefined {
  if (buf.length - off < 4) return undefined;
  const magic = buf.readUInt32BE(off);
  if (magic === SIMPLE_REPLY_MAGIC) {
    if (buf.length - off < SIMPLE_REPLY_SIZE) return undefined;
    return { kind: 'simple', error: buf.readUInt32BE(off + 4), cookie: buf.readBigUInt64BE(off + 8), size: 16 };
  }
  if (magic === STRUCTURED_REPLY_MAGIC) {
    if (buf.length - off < CHUNK_HEADER_SIZE) return undefined;
    const length = buf.readUInt32BE(off + 16);
    if (buf.length - off < CHUNK_HEADER_SIZE + length) return undefined;
    return {
      kind: 'chunk',
      flags: buf.readUInt16BE(off + 4),
      type: buf.readUInt16BE(off + 6),
      cookie: buf.readBigUInt64BE(off + 8),
      payload: buf.subarray(off + CHUNK_HEADER_SIZE, off + CHUNK_HEADER_SIZE + length),
      size: CHUNK_HEADER_SIZE + length,
    };
  }
  throw new Error(`Bad reply magic 0x${magic.toString(16)}`);
}
