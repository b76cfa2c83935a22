/**
 * The NBD protocol's constants (NetworkBlockDevice doc/proto.md): magics, flags, option and
 * command codes, limits and message sizes. The pure codecs built on them are in
 * handshake-codec.ts and transmission-codec.ts.
 */

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
/** qemu:dirty-bitmap:NAME, one per exported bitmap (qemu-nbd -B), ids from 2 in export order. */
export const CONTEXT_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
export const CONTEXT_ID_FIRST_DIRTY_BITMAP = 2;
/** qemu:dirty-bitmap status bit. */
export const STATE_DIRTY = 1 << 0;

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

/** UTF-8 bytes of a string, cut (at a character boundary) to the protocol's string limit. */
export function encodeString(text: string, limit = MAX_STRING): Buffer {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= limit) return buf;
  let end = limit;
  // Back up over continuation bytes (10xxxxxx) so that no character is cut in half.
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--;
  return buf.subarray(0, end);
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
