/**
 * A scripted NBD server for testing vdisk's client: a correct fixed-newstyle handshake (or one
 * the script replaces), then every request handed to the script, which answers with whatever
 * bytes it likes — correct replies, or the hostile ones the client must survive. It listens on a
 * Unix socket in a temporary directory and records what the client sent.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeMetaContextReply,
  encodeOptionReply,
} from '../../src/nbd-wire/handshake-codec.js';
import { ByteQueue } from '../../src/nbd-wire/input.js';
import {
  CHUNK,
  CMD,
  CONTEXT_BASE_ALLOCATION,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  NBDMAGIC,
  OPT,
  REP,
  REPLY_FLAG_DONE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  TF,
} from '../../src/nbd-wire/protocol.js';

export interface FakeRequest {
  type: number;
  flags: number;
  /** The 8 cookie bytes, to echo. */
  cookie: Buffer;
  offset: number;
  length: number;
  payload?: Buffer;
}

export interface FakeConnection {
  socket: net.Socket;
  /** Sends raw bytes. */
  send(bytes: Buffer): void;
  /** Which connection this is (0 first). */
  index: number;
}

export interface FakeScript {
  size?: number;
  /** Transmission flags (HAS_FLAGS is added). Default: flush, FUA, trim, write zeroes, fast zero. */
  flags?: number;
  structured?: boolean;
  baseAllocation?: boolean;
  /** Context id given to base:allocation (default 1). */
  contextId?: number;
  /** NBD_INFO_BLOCK_SIZE sent with GO (minimum, preferred, maximum), as given: valid or not. */
  blockSizes?: { minimum: number; preferred: number; maximum: number };
  /** Answers an option in place of the correct handshake when it returns true. */
  answerOption?: (option: number, connection: FakeConnection) => boolean;
  /** Replaces the whole handshake: the script talks to the fresh socket itself. */
  handshake?: (connection: FakeConnection, queue: ByteQueue) => void;
  /** Answers one request (after the handshake). */
  onRequest?: (request: FakeRequest, connection: FakeConnection) => void;
}

export interface FakeServer {
  uri: string;
  /** Requests received, over all connections. */
  requests: FakeRequest[];
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

export const DEFAULT_FLAGS = TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.SEND_FAST_ZERO;

// --- reply builders ---

export function simpleReply(cookie: Buffer, error = 0, data?: Buffer): Buffer {
  const head = Buffer.alloc(16);
  head.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  head.writeUInt32BE(error, 4);
  cookie.copy(head, 8);
  return data ? Buffer.concat([head, data]) : head;
}

export function chunk(cookie: Buffer, type: number, payload: Buffer, done: boolean): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  head.writeUInt16BE(done ? REPLY_FLAG_DONE : 0, 4);
  head.writeUInt16BE(type, 6);
  cookie.copy(head, 8);
  head.writeUInt32BE(payload.length, 16);
  return Buffer.concat([head, payload]);
}

export function dataChunk(cookie: Buffer, offset: number, data: Buffer, done: boolean): Buffer {
  const payload = Buffer.alloc(8 + data.length);
  payload.writeBigUInt64BE(BigInt(offset), 0);
  data.copy(payload, 8);
  return chunk(cookie, CHUNK.OFFSET_DATA, payload, done);
}

export function holeChunk(cookie: Buffer, offset: number, length: number, done: boolean): Buffer {
  const payload = Buffer.alloc(12);
  payload.writeBigUInt64BE(BigInt(offset), 0);
  payload.writeUInt32BE(length, 8);
  return chunk(cookie, CHUNK.OFFSET_HOLE, payload, done);
}

export function statusChunk(cookie: Buffer, contextId: number, extents: Array<[number, number]>, done = true): Buffer {
  const payload = Buffer.alloc(4 + 8 * extents.length);
  payload.writeUInt32BE(contextId, 0);
  extents.forEach(([length, flags], i) => {
    payload.writeUInt32BE(length, 4 + 8 * i);
    payload.writeUInt32BE(flags, 8 + 8 * i);
  });
  return chunk(cookie, CHUNK.BLOCK_STATUS, payload, done);
}

export function errorChunk(cookie: Buffer, errno: number, message: string, done = true): Buffer {
  const msg = Buffer.from(message);
  const payload = Buffer.alloc(6 + msg.length);
  payload.writeUInt32BE(errno, 0);
  payload.writeUInt16BE(msg.length, 4);
  msg.copy(payload, 6);
  return chunk(cookie, CHUNK.ERROR, payload, done);
}

export function noneChunk(cookie: Buffer): Buffer {
  return chunk(cookie, CHUNK.NONE, Buffer.alloc(0), true);
}

/** A server's greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function greeting(flags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): Buffer {
  const g = Buffer.alloc(18);
  NBDMAGIC.copy(g, 0);
  g.write('IHAVEOPT', 8, 'latin1');
  g.writeUInt16BE(flags, 16);
  return g;
}

/** The correct handshake: options answered until GO or EXPORT_NAME. Returns true when done. */
function handshakeStep(script: FakeScript, c: FakeConnection, queue: ByteQueue, state: { stage: number }): boolean {
  const size = script.size ?? 1 << 20;
  const flags = TF.HAS_FLAGS | (script.flags ?? DEFAULT_FLAGS);
  if (state.stage === 0) {
    if (queue.length < 4) return false;
    queue.skip(4);
    state.stage = 1;
  }
  for (;;) {
    if (queue.length < 16) return false;
    const [h, o] = queue.peekSmall(16);
    const option = h.readUInt32BE(o + 8);
    const length = h.readUInt32BE(o + 12);
    if (queue.length < 16 + length) return false;
    queue.skip(16 + length);
    if (script.answerOption?.(option, c)) continue;
    switch (option) {
      case OPT.STRUCTURED_REPLY:
        c.send(encodeOptionReply(option, script.structured === false ? REP.ERR_UNSUP : REP.ACK));
        break;
      case OPT.SET_META_CONTEXT:
        if (script.structured !== false && script.baseAllocation !== false) {
          c.send(encodeMetaContextReply(option, script.contextId ?? 1, CONTEXT_BASE_ALLOCATION));
        }
        c.send(encodeOptionReply(option, REP.ACK));
        break;
      case OPT.GO:
        c.send(encodeInfoExport(option, size, flags));
        if (script.blockSizes) c.send(encodeInfoBlockSize(option, script.blockSizes));
        c.send(encodeOptionReply(option, REP.ACK));
        return true;
      case OPT.EXPORT_NAME: {
        // No reply header: size and flags (the client asked for no zero padding).
        const reply = Buffer.alloc(10);
        reply.writeBigUInt64BE(BigInt(size), 0);
        reply.writeUInt16BE(flags, 8);
        c.send(reply);
        return true;
      }
      default:
        c.send(encodeOptionReply(option, REP.ERR_UNSUP));
    }
  }
}

function parseRequests(queue: ByteQueue, onRequest: (r: FakeRequest) => void): void {
  for (;;) {
    if (queue.length < 28) return;
    const [b, o] = queue.peekSmall(28);
    const type = b.readUInt16BE(o + 6);
    const length = b.readUInt32BE(o + 24);
    const payloadLength = type === CMD.WRITE ? length : 0;
    if (queue.length < 28 + payloadLength) return;
    const head = Buffer.from(queue.take(28));
    const payload = payloadLength ? Buffer.from(queue.take(payloadLength)) : undefined;
    onRequest({
      type,
      flags: head.readUInt16BE(4),
      cookie: head.subarray(8, 16),
      offset: Number(head.readBigUInt64BE(16)),
      length,
      ...(payload ? { payload } : {}),
    });
  }
}

export async function startFakeServer(script: FakeScript): Promise<FakeServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-fake-nbd-'));
  const socketPath = path.join(dir, 'nbd.sock');
  const requests: FakeRequest[] = [];
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const c: FakeConnection = {
      socket,
      index: accepted++,
      send: (bytes) => {
        if (!socket.destroyed) socket.write(bytes);
      },
    };
    const queue = new ByteQueue();
    if (script.handshake) {
      socket.on('data', (d: Buffer) => queue.push(d));
      script.handshake(c, queue);
      return;
    }
    c.send(greeting());
    const state = { stage: 0 };
    let negotiated = false;
    socket.on('data', (d: Buffer) => {
      queue.push(d);
      if (!negotiated) negotiated = handshakeStep(script, c, queue, state);
      if (negotiated) {
        parseRequests(queue, (r) => {
          requests.push(r);
          if (r.type !== CMD.DISC) script.onRequest?.(r, c);
        });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    uri: `nbd+unix:///?socket=${socketPath}`,
    requests,
    connections: () => accepted,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
