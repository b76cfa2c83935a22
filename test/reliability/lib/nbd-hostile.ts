/**
 * Hostile NBD clients: fast-check arbitraries for handshakes and transmission requests that
 * lie (lengths 0, 4097, 2^32-1 and past the maximum, bad magics, unknown options and commands,
 * offsets out of range, payloads that never come), one connection per case, and checkers for
 * what the server answered: every answer well framed and naming something the client sent.
 */
import fc from 'fast-check';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../../src/nbd-wire/handshake-codec.js';
import {
  CMD,
  MAX_OPTION_LENGTH,
  MAX_PAYLOAD,
  OPTION_REPLY_MAGIC_HI,
  OPTION_REPLY_MAGIC_LO,
  REP,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from '../../../src/nbd-wire/protocol.js';
import { encodeRequest } from '../../../src/nbd-wire/transmission-codec.js';
import type { RawClient } from '../../helpers/nbd-client.js';

/** Lengths the spec and the server treat specially. */
export const EDGE_LENGTHS = [
  0,
  1,
  4096,
  4097,
  MAX_OPTION_LENGTH,
  MAX_OPTION_LENGTH + 1,
  MAX_PAYLOAD,
  MAX_PAYLOAD + 1,
  0xffffffff,
];

// --- handshake ---

export interface HostileOption {
  code: number;
  data: Buffer;
  /** The length field, when it lies about the data sent. */
  lyingLength?: number;
  badMagic: boolean;
}

export interface HostileHandshake {
  clientFlags: number;
  options: HostileOption[];
}

const optionData = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  fc.constantFrom(0, 1, 4096, 4097).map((n) => encodeInfoRequest('x'.repeat(n), [0, 1, 2, 3])),
  fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffff })).map(([nameLength, infos]) => {
    // An INFO/GO request whose inner lengths lie.
    const b = Buffer.alloc(10);
    b.writeUInt32BE(nameLength, 0);
    b.writeUInt16BE(infos, 8);
    return b;
  }),
  fc.constantFrom(
    encodeMetaContextRequest('', ['base:allocation']),
    encodeMetaContextRequest('', ['qemu:', 'base:', 'x'.repeat(4097)]),
    encodeMetaContextRequest(
      '',
      Array.from({ length: 300 }, () => 'base:allocation'),
    ),
  ),
);

const hostileOption: fc.Arbitrary<HostileOption> = fc.record({
  code: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(2, 3, 4, 5, 6, 8, 9, 10, 11) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
  ),
  data: optionData,
  lyingLength: fc
    .option(fc.oneof(fc.constantFrom(...EDGE_LENGTHS), fc.integer({ min: 0, max: 0xffffffff })), { freq: 4 })
    .map((v) => v ?? undefined),
  badMagic: fc.oneof({ weight: 12, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});

export const hostileHandshake: fc.Arbitrary<HostileHandshake> = fc.record({
  clientFlags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 3) }, fc.integer({ min: 0, max: 0xffffffff })),
  options: fc.array(hostileOption, { minLength: 1, maxLength: 6 }),
});

export function encodeHostileOption(o: HostileOption): Buffer {
  const head = Buffer.alloc(16);
  head.writeUInt32BE(o.badMagic ? 0x49484157 : 0x49484156, 0);
  head.writeUInt32BE(0x454f5054, 4);
  head.writeUInt32BE(o.code >>> 0, 8);
  head.writeUInt32BE((o.lyingLength ?? o.data.length) >>> 0, 12);
  return Buffer.concat([head, o.data]);
}

/**
 * Checks the server's option replies: each one well framed, answering an option that was sent
 * (in order), with a known reply type. Stops at a successful GO (or the export-name reply):
 * what follows belongs to the transmission phase.
 */
export function checkOptionReplies(bytes: Buffer, sent: readonly number[]): string[] {
  const problems: string[] = [];
  let at = 0;
  const known = new Set<number>(Object.values(REP));
  while (at < bytes.length) {
    if (bytes.length - at < 20) {
      if (sent.includes(1)) break; // an NBD_OPT_EXPORT_NAME reply (size and flags) is shorter
      problems.push(`${bytes.length - at} trailing bytes are not an option reply`);
      break;
    }
    if (bytes.readUInt32BE(at) !== OPTION_REPLY_MAGIC_HI || bytes.readUInt32BE(at + 4) !== OPTION_REPLY_MAGIC_LO) {
      if (sent.includes(1)) break;
      problems.push(`bad option reply magic at byte ${at}`);
      break;
    }
    const option = bytes.readUInt32BE(at + 8);
    const type = bytes.readUInt32BE(at + 12);
    const length = bytes.readUInt32BE(at + 16);
    if (!sent.includes(option)) problems.push(`a reply to option ${option}, which was not sent`);
    if (!known.has(type)) problems.push(`unknown reply type 0x${type.toString(16)}`);
    if (length > 64 * 1024) problems.push(`a reply of ${length} bytes`);
    if (bytes.length - at < 20 + length) break; // cut by the server closing: allowed
    at += 20 + length;
    if (option === 7 && type === REP.ACK) break; // GO succeeded
  }
  return problems;
}

// --- transmission ---

export interface HostileRequest {
  magicOk: boolean;
  type: number;
  flags: number;
  offset: bigint;
  length: number;
  /** For a WRITE: how much of the payload is sent (all of it when it is small enough). */
  payloadShare: number;
}

export function hostileRequests(size: number): fc.Arbitrary<HostileRequest[]> {
  const request: fc.Arbitrary<HostileRequest> = fc.record({
    magicOk: fc.oneof({ weight: 30, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    type: fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom(0, 1, 3, 4, 5, 6, 7) },
      { weight: 1, arbitrary: fc.constant(CMD.DISC) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    ),
    flags: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(0, 1, 2, 4, 8, 16) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    ),
    offset: fc.oneof(
      fc.constantFrom(
        0n,
        BigInt(size - 512),
        BigInt(size),
        BigInt(size + 1),
        2n ** 63n,
        2n ** 64n - 512n,
        2n ** 64n - 1n,
      ),
      fc.bigInt({ min: 0n, max: BigInt(size) }),
    ),
    length: fc.oneof(fc.constantFrom(...EDGE_LENGTHS), fc.integer({ min: 0, max: 256 * 1024 })),
    payloadShare: fc.oneof(
      { weight: 8, arbitrary: fc.constant(1) },
      { weight: 1, arbitrary: fc.double({ min: 0, max: 1, noNaN: true }) },
    ),
  });
  return fc.array(request, { minLength: 1, maxLength: 12 });
}

/** The bytes of a request; the second value says whether the whole WRITE payload was sent. */
export function encodeHostileRequest(r: HostileRequest, cookie: number): [Buffer, boolean] {
  const sendable = r.type === CMD.WRITE ? Math.min(r.length, 1024 * 1024) : 0;
  const sent = Math.floor(sendable * r.payloadShare);
  const full = r.type !== CMD.WRITE || sent === r.length;
  const head = encodeRequest(r.type, r.flags, BigInt(cookie), r.offset, 0);
  head.writeUInt32BE(r.length >>> 0, 24);
  if (!r.magicOk) head.writeUInt32BE(0x25609514, 0);
  return [Buffer.concat([head, Buffer.alloc(sent, cookie & 0xff)]), full];
}

/**
 * Checks the replies of the transmission phase: each well framed, naming a cookie that was sent,
 * nothing after a cookie's final reply, data chunks inside their request's range.
 * `open`: the server kept the connection; then every request sent whole got its final reply.
 */
export function checkTransmissionReplies(
  bytes: Buffer,
  sent: ReadonlyMap<number, { request: HostileRequest; whole: boolean }>,
  open: boolean,
): string[] {
  const problems: string[] = [];
  const done = new Set<number>();
  let at = 0;
  while (at < bytes.length && problems.length === 0) {
    if (bytes.length - at < 4) break;
    const magic = bytes.readUInt32BE(at);
    let cookie: number;
    let final: boolean;
    let size: number;
    if (magic === SIMPLE_REPLY_MAGIC) {
      if (bytes.length - at < 16) break;
      cookie = Number(bytes.readBigUInt64BE(at + 8));
      final = true;
      size = 16;
      const req = sent.get(cookie)?.request;
      if (req?.type === CMD.READ && bytes.readUInt32BE(at + 4) === 0) size += req.length;
    } else if (magic === STRUCTURED_REPLY_MAGIC) {
      if (bytes.length - at < 20) break;
      const flags = bytes.readUInt16BE(at + 4);
      const type = bytes.readUInt16BE(at + 6);
      cookie = Number(bytes.readBigUInt64BE(at + 8));
      const length = bytes.readUInt32BE(at + 16);
      final = (flags & 1) !== 0;
      size = 20 + length;
      if (![0, 1, 2, 5, 0x8001, 0x8002].includes(type)) problems.push(`unknown chunk type ${type}`);
      const req = sent.get(cookie)?.request;
      if (req && (type === 1 || type === 2) && bytes.length - at >= 28) {
        const off = bytes.readBigUInt64BE(at + 20);
        const len = type === 1 ? BigInt(length - 8) : BigInt(bytes.readUInt32BE(at + 28));
        if (off < req.offset || off + len > req.offset + BigInt(req.length)) {
          problems.push(`cookie ${cookie}: a chunk at ${off}+${len} outside the request ${req.offset}+${req.length}`);
        }
      }
    } else {
      problems.push(`bad reply magic 0x${magic.toString(16)} at byte ${at}`);
      break;
    }
    if (!sent.has(cookie)) problems.push(`a reply to cookie ${cookie}, which was not sent`);
    if (done.has(cookie)) problems.push(`a reply to cookie ${cookie} after its final reply`);
    if (bytes.length - at < size) break;
    if (final) done.add(cookie);
    at += size;
  }
  if (open && problems.length === 0) {
    const missing = unanswered(sent, done);
    if (missing !== undefined) {
      const r = sent.get(missing)!.request;
      problems.push(
        `cookie ${missing} (${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}) got no reply`,
      );
    }
  }
  return problems;
}

/** The first request sent whole that has no final reply yet. */
function unanswered(
  sent: ReadonlyMap<number, { request: HostileRequest; whole: boolean }>,
  done: Set<number>,
): number | undefined {
  for (const [cookie, s] of sent) {
    if (s.whole && s.request.magicOk && s.request.type !== CMD.DISC && !done.has(cookie)) return cookie;
  }
  return undefined;
}

/**
 * Waits until every request sent whole has its final reply, or the server closes the
 * connection, or `maxMs` pass. Returns whether the connection is still open.
 */
export async function awaitReplies(
  c: RawClient,
  sent: ReadonlyMap<number, { request: HostileRequest; whole: boolean }>,
  maxMs = 20_000,
): Promise<boolean> {
  const end = Date.now() + maxMs;
  while (Date.now() < end) {
    if (c.isClosed) return false;
    if (checkTransmissionReplies(c.peekAll(), sent, true).length === 0) return true;
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 10))]);
  }
  return !c.isClosed;
}

/** Waits until the server closes the connection or sends nothing for `quietMs`. Returns whether it is still open. */
export async function settle(c: RawClient, quietMs: number, maxMs = 5000): Promise<boolean> {
  const end = Date.now() + maxMs;
  let seen = -1;
  while (Date.now() < end) {
    if (c.isClosed) return false;
    if (c.pending === seen) return true;
    seen = c.pending;
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, quietMs))]);
  }
  return !c.isClosed;
}

/** The resident and peak resident memory of a process, in bytes (Linux). */
export async function processMemory(pid: number): Promise<{ rss: number; peak: number }> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}
