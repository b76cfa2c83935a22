/**
 * The NBD protocol's constants and the pure encoding and decoding of every message the server
 * sends or receives (NetworkBlockDevice doc/proto.md: fixed newstyle handshake, simple and
 * structured replies, metadata contexts). No I/O here: functions take and return Buffers, so
 * they are unit-tested byte for byte.
 *
 * 64-bit fields: offsets in requests are read as two 32-bit halves into a number that is exact
 * below 2^53 and rounded (order-preserving) above, which is all a bounds check needs; cookies
 * are opaque and kept as their two halves.
 */
import { readU64Approx, writeU64 } from '../util/u64.js';

// --- magics ---

/** "NBDMAGIC", the first 8 bytes the server sends. */
export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
/** "IHAVEOPT": the newstyle magic, also the prefix of every option the client sends. */
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
/** Magic of every option reply (0x0003e889045565a9). */
export const OPTION_REPLY_MAGIC_HI = 0x0003e889;
export const OPTION_REPLY_MAGIC_LO = 0x045565a9;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// --- flags and codes ---

/** Handshake flags (server) and client flags: the same two bits. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

/** Transmission flags. */
export const TF = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Options (NBD_OPT_*). */
export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** Option reply types (NBD_REP_*); errors have bit 31 set. */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

/** Information types of NBD_OPT_INFO and NBD_OPT_GO. */
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Commands (NBD_CMD_*). */
export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags (NBD_CMD_FLAG_*). */
export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

/** Structured reply flag: the last chunk of a reply. */
export const REPLY_FLAG_DONE = 1;

/** Structured reply chunk types. */
export const CHUNK = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** Error values of the transmission phase. */
export const NBD_ERR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** base:allocation status bits. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

/** The metadata contexts vdisk serves, with the ids qemu-nbd gives them. */
export const CONTEXT_BASE_ALLOCATION = 'base:allocation';
export const CONTEXT_ALLOCATION_DEPTH = 'qemu:allocation-depth';
export const CONTEXT_ID_BASE_ALLOCATION = 0;
export const CONTEXT_ID_ALLOCATION_DEPTH = 1;

// --- limits ---

/** The longest string (export name, query, message) the spec allows. */
export const MAX_STRING = 4096;
/** The largest READ/WRITE payload vdisk advertises and accepts (the spec's interoperable 32 MiB). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** The largest option vdisk reads; anything longer is treated as an attack. */
export const MAX_OPTION_LENGTH = 64 * 1024;

// --- sizes ---

export const GREETING_SIZE = 18;
export const CLIENT_FLAGS_SIZE = 4;
export const OPTION_HEADER_SIZE = 16;
export const OPTION_REPLY_HEADER_SIZE = 20;
export const REQUEST_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
export const CHUNK_HEADER_SIZE = 20;
/** A data chunk's header with its 8-byte offset. */
export const DATA_CHUNK_HEADER_SIZE = 28;
export const HOLE_CHUNK_SIZE = 32;

// --- the handshake ---

/** The server's first 18 bytes: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(flags: number): Buffer {
  const buf = Buffer.allocUnsafe(GREETING_SIZE);
  NBDMAGIC.copy(buf, 0);
  buf.writeUInt32BE(IHAVEOPT_HI, 8);
  buf.writeUInt32BE(IHAVEOPT_LO, 12);
  buf.writeUInt16BE(flags, 16);
  return buf;
}

export interface OptionHeader {
  /** The 8-byte magic was IHAVEOPT. */
  magicOk: boolean;
  option: number;
  length: number;
}

export function decodeOptionHeader(buf: Buffer, off = 0): OptionHeader {
  return {
    magicOk: buf.readUInt32BE(off) === IHAVEOPT_HI && buf.readUInt32BE(off + 4) === IHAVEOPT_LO,
    option: buf.readUInt32BE(off + 8),
    length: buf.readUInt32BE(off + 12),
  };
}

/** An option as a client sends it (used by tests and by clients). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(OPTION_HEADER_SIZE + data.length);
  buf.writeUInt32BE(IHAVEOPT_HI, 0);
  buf.writeUInt32BE(IHAVEOPT_LO, 4);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, OPTION_HEADER_SIZE);
  return buf;
}

/** One option reply: magic, option, type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + data.length);
  buf.writeUInt32BE(OPTION_REPLY_MAGIC_HI, 0);
  buf.writeUInt32BE(OPTION_REPLY_MAGIC_LO, 4);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(type >>> 0, 12);
  buf.writeUInt32BE(data.length, 16);
  data.copy(buf, OPTION_REPLY_HEADER_SIZE);
  return buf;
}

/** An error reply with a human-readable message (cut to the string limit). */
export function encodeOptionError(option: number, type: number, message: string): Buffer {
  return encodeOptionReply(option, type, encodeString(message));
}

export interface OptionReply {
  magicOk: boolean;
  option: number;
  type: number;
  data: Buffer;
}

/** Decodes one option reply at `off` (for tests and clients); undefined if incomplete. */
export function decodeOptionReply(buf: Buffer, off = 0): (OptionReply & { size: number }) | undefined {
  if (buf.length - off < OPTION_REPLY_HEADER_SIZE) return undefined;
  const length = buf.readUInt32BE(off + 16);
  if (buf.length - off < OPTION_REPLY_HEADER_SIZE + length) return undefined;
  return {
    magicOk: buf.readUInt32BE(off) === OPTION_REPLY_MAGIC_HI && buf.readUInt32BE(off + 4) === OPTION_REPLY_MAGIC_LO,
    option: buf.readUInt32BE(off + 8),
    type: buf.readUInt32BE(off + 12),
    data: buf.subarray(off + OPTION_REPLY_HEADER_SIZE, off + OPTION_REPLY_HEADER_SIZE + length),
    size: OPTION_REPLY_HEADER_SIZE + length,
  };
}

/** NBD_REP_SERVER for NBD_OPT_LIST: name length, name, then the description. */
export function encodeServerReply(name: string, description: string): Buffer {
  const n = encodeString(name);
  const d = encodeString(description);
  const data = Buffer.allocUnsafe(4 + n.length + d.length);
  data.writeUInt32BE(n.length, 0);
  n.copy(data, 4);
  d.copy(data, 4 + n.length);
  return encodeOptionReply(OPT.LIST, REP.SERVER, data);
}

/** NBD_REP_INFO carrying NBD_INFO_EXPORT: size and transmission flags. */
export function encodeInfoExport(option: number, size: number, flags: number): Buffer {
  const data = Buffer.allocUnsafe(12);
  data.writeUInt16BE(INFO.EXPORT, 0);
  writeU64(data, 2, size, 'export size');
  data.writeUInt16BE(flags, 10);
  return encodeOptionReply(option, REP.INFO, data);
}

/** NBD_REP_INFO carrying NBD_INFO_NAME or NBD_INFO_DESCRIPTION. */
export function encodeInfoString(
  option: number,
  type: typeof INFO.NAME | typeof INFO.DESCRIPTION,
  text: string,
): Buffer {
  const s = encodeString(text);
  const data = Buffer.allocUnsafe(2 + s.length);
  data.writeUInt16BE(type, 0);
  s.copy(data, 2);
  return encodeOptionReply(option, REP.INFO, data);
}

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

/** NBD_REP_INFO carrying NBD_INFO_BLOCK_SIZE. */
export function encodeInfoBlockSize(option: number, sizes: BlockSizes): Buffer {
  const data = Buffer.allocUnsafe(14);
  data.writeUInt16BE(INFO.BLOCK_SIZE, 0);
  data.writeUInt32BE(sizes.minimum, 2);
  data.writeUInt32BE(sizes.preferred, 6);
  data.writeUInt32BE(sizes.maximum, 10);
  return encodeOptionReply(option, REP.INFO, data);
}

/** NBD_REP_META_CONTEXT: context id and name. */
export function encodeMetaContextReply(option: number, id: number, name: string): Buffer {
  const s = encodeString(name);
  const data = Buffer.allocUnsafe(4 + s.length);
  data.writeUInt32BE(id, 0);
  s.copy(data, 4);
  return encodeOptionReply(option, REP.META_CONTEXT, data);
}

/** The reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(noZeroes ? 10 : 134);
  writeU64(buf, 0, size, 'export size');
  buf.writeUInt16BE(flags, 8);
  return buf;
}

/** A decoded string, or why it was refused. */
type Parsed<T> = ({ ok: true } & T) | { ok: false; message: string };

/** A u32-length-prefixed string read from option data. */
type StringRead =
  | { kind: 'ok'; value: string; next: number }
  /** Longer than the string limit; `next` is where the data after it starts. */
  | { kind: 'too-long'; message: string; next: number }
  | { kind: 'invalid'; message: string };

/** Reads a u32-length-prefixed string at `off` within `data`. */
function readString(data: Buffer, off: number, what: string): StringRead {
  if (data.length - off < 4) {
    return { kind: 'invalid', message: `Inconsistent lengths in option: no room for the ${what} length` };
  }
  const len = data.readUInt32BE(off);
  if (len > MAX_STRING) return { kind: 'too-long', message: `Invalid ${what} length: ${len}`, next: off + 4 + len };
  if (len > data.length - off - 4) {
    return { kind: 'invalid', message: `Inconsistent lengths in option: ${what} of ${len} bytes does not fit` };
  }
  const bytes = data.subarray(off + 4, off + 4 + len);
  if (bytes.includes(0)) return { kind: 'invalid', message: `Unexpected embedded NUL in ${what}` };
  return { kind: 'ok', value: bytes.toString('utf8'), next: off + 4 + len };
}

export interface InfoRequest {
  name: string;
  /** The NBD_INFO_* types asked for, in order. */
  requests: number[];
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO: name, then a u16 count of u16 information requests. */
export function decodeInfoRequest(data: Buffer): Parsed<InfoRequest> {
  const name = readString(data, 0, 'export name');
  if (name.kind !== 'ok') return { ok: false, message: name.message };
  let off = name.next;
  if (data.length - off < 2)
    return { ok: false, message: 'Inconsistent lengths in option: no room for the request count' };
  const count = data.readUInt16BE(off);
  off += 2;
  if (data.length - off !== count * 2) {
    return {
      ok: false,
      message: `Inconsistent lengths in option: ${count} information requests need ${count * 2} bytes`,
    };
  }
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(off + 2 * i));
  return { ok: true, name: name.value, requests };
}

/** Encodes NBD_OPT_INFO / NBD_OPT_GO data (for tests and clients). */
export function encodeInfoRequest(name: string, requests: readonly number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const buf = Buffer.allocUnsafe(4 + n.length + 2 + 2 * requests.length);
  buf.writeUInt32BE(n.length, 0);
  n.copy(buf, 4);
  buf.writeUInt16BE(requests.length, 4 + n.length);
  for (let i = 0; i < requests.length; i++) buf.writeUInt16BE(requests[i]!, 6 + n.length + 2 * i);
  return buf;
}

export interface MetaContextRequest {
  exportName: string;
  /** The queries; a query longer than the string limit is kept as null (ignored, as qemu-nbd does). */
  queries: Array<string | null>;
}

/** The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export function decodeMetaContextRequest(data: Buffer): Parsed<MetaContextRequest> {
  const name = readString(data, 0, 'export name');
  if (name.kind !== 'ok') return { ok: false, message: name.message };
  let off = name.next;
  if (data.length - off < 4)
    return { ok: false, message: 'Inconsistent lengths in option: no room for the query count' };
  const count = data.readUInt32BE(off);
  off += 4;
  // Each query needs at least its 4-byte length: a count that cannot fit is refused before looping.
  if (count > (data.length - off) / 4) {
    return { ok: false, message: `Inconsistent lengths in option: ${count} queries do not fit` };
  }
  const queries: Array<string | null> = [];
  for (let i = 0; i < count; i++) {
    const q = readString(data, off, 'query');
    if (q.kind === 'invalid' || (q.kind === 'too-long' && q.next > data.length))
      return { ok: false, message: q.message };
    queries.push(q.kind === 'ok' ? q.value : null);
    off = q.next;
  }
  if (off !== data.length)
    return { ok: false, message: 'Inconsistent lengths in option: trailing bytes after the queries' };
  return { ok: true, exportName: name.value, queries };
}

/** Encodes NBD_OPT_{LIST,SET}_META_CONTEXT data (for tests and clients). */
export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(exportName, 'utf8');
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(n.length, 0);
  parts.push(head, n);
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const b = Buffer.from(q, 'utf8');
    const l = Buffer.allocUnsafe(4);
    l.writeUInt32BE(b.length, 0);
    parts.push(l, b);
  }
  return Buffer.concat(parts);
}

/** UTF-8 bytes of a string, cut (at a character boundary) to the protocol's string limit. */
export function encodeString(text: string, limit = MAX_STRING): Buffer {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= limit) return buf;
  let end = limit;
  // Back up over continuation bytes (10xxxxxx) so that no character is cut in half.
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--;
  return buf.subarray(0, end);
}

// --- the transmission phase ---

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

/** The header of an OFFSET_DATA chunk carrying `dataLength` bytes read at `offset` (the data follows). */
export function encodeDataChunkHeader(
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataLength: number,
  done: boolean,
): Buffer {
  const buf = Buffer.allocUnsafe(DATA_CHUNK_HEADER_SIZE);
  writeChunkHeader(buf, 0, done ? REPLY_FLAG_DONE : 0, CHUNK.OFFSET_DATA, cookieHi, cookieLo, 8 + dataLength);
  writeU64(buf, CHUNK_HEADER_SIZE, offset, 'offset');
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

/** Names for messages and logs. */
export function optionName(option: number): string {
  const name = Object.entries(OPT).find(([, v]) => v === option)?.[0];
  return name ? `NBD_OPT_${name}` : `option ${option}`;
}

export function commandName(type: number): string {
  const name = Object.entries(CMD).find(([, v]) => v === type)?.[0];
  return name ? `NBD_CMD_${name}` : `command ${type}`;
}
