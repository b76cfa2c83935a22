/**
 * Pure encoding and decoding of the handshake's messages: the greeting, options, option
 * replies, and the data of INFO/GO and the meta-context options. Decoders never throw on
 * client input: they return { ok: false, message } for the server to send back.
 */
import { writeU64 } from '../util/u64.js';
import {
  encodeString,
  GREETING_SIZE,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  INFO,
  MAX_STRING,
  NBDMAGIC,
  OPT,
  OPTION_HEADER_SIZE,
  OPTION_REPLY_HEADER_SIZE,
  OPTION_REPLY_MAGIC_HI,
  OPTION_REPLY_MAGIC_LO,
  REP,
} from './protocol.js';

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
