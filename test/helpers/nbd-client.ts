/**
 * A deliberately simple NBD client over a raw socket, for tests that need to send exactly the
 * bytes they choose (including garbage) and look at exactly the bytes the server answers.
 */
import net from 'node:net';
import {
  decodeOptionReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  type OptionReply,
} from '../../src/nbd-wire/handshake-codec.js';
import { CMD, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, INFO, OPT, REP } from '../../src/nbd-wire/protocol.js';
import { decodeReply, encodeRequest } from '../../src/nbd-wire/transmission-codec.js';

export type Address = { socket: string } | { host: string; port: number };

export class RawClient {
  readonly socket: net.Socket;
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  #closed = false;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      this.#wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.#closed = true;
        this.#wake();
        resolve();
      }),
    );
  }

  static connect(address: Address): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket =
        'socket' in address ? net.connect(address.socket) : net.connect({ host: address.host, port: address.port });
      socket.once('connect', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  /** Bytes received and not yet consumed. */
  get pending(): number {
    return this.#buf.length;
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const fn of w) fn();
  }

  /** Waits until `n` bytes are there (or the connection closes: then throws). */
  async need(n: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buf.length < n) {
      if (this.#closed) throw new Error(`connection closed with ${this.#buf.length} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.#buf.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async take(n: number): Promise<Buffer> {
    await this.need(n);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return Buffer.from(out);
  }

  /** A copy of every byte received and not yet consumed. */
  peekAll(): Buffer {
    return Buffer.from(this.#buf);
  }

  /** Every byte received and not yet consumed, consumed now. */
  takeAll(): Buffer {
    const out = Buffer.from(this.#buf);
    this.#buf = Buffer.alloc(0);
    return out;
  }

  send(buf: Buffer): void {
    this.socket.write(buf);
  }

  /** Resolves true if the server closes the connection within `ms`. */
  async closesWithin(ms: number): Promise<boolean> {
    const t = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms));
    return Promise.race([this.closed.then(() => true), t]);
  }

  close(): void {
    this.socket.destroy();
  }

  // --- handshake ---

  /** Reads the greeting and sends client flags (default: fixed newstyle and no zeroes). */
  async greet(clientFlags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): Promise<number> {
    const greeting = await this.take(18);
    if (greeting.toString('latin1', 0, 8) !== 'NBDMAGIC') throw new Error('bad greeting');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags >>> 0, 0);
    this.send(flags);
    return greeting.readUInt16BE(16);
  }

  async optionReply(): Promise<OptionReply> {
    await this.need(20);
    const length = this.#buf.readUInt32BE(16);
    await this.need(20 + length);
    const r = decodeOptionReply(this.#buf)!;
    const copy = { ...r, data: Buffer.from(r.data) };
    this.#buf = this.#buf.subarray(r.size);
    return copy;
  }

  /** Sends an option and collects replies up to the final one (ACK or an error). */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.send(encodeOption(option, data));
    const replies: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      replies.push(r);
      if (r.type === REP.ACK || r.type >= 0x80000000) return replies;
    }
  }

  /** A full handshake: structured replies, the given contexts, GO. Returns the export size and flags. */
  async handshake(
    options: { name?: string; structured?: boolean; contexts?: string[] } = {},
  ): Promise<{ size: number; flags: number; contextIds: Map<string, number> }> {
    await this.greet();
    const contextIds = new Map<string, number>();
    if (options.structured ?? true) {
      const r = await this.option(OPT.STRUCTURED_REPLY);
      if (r[0]!.type !== REP.ACK) throw new Error('structured replies refused');
      if (options.contexts?.length) {
        const replies = await this.option(
          OPT.SET_META_CONTEXT,
          encodeMetaContextRequest(options.name ?? '', options.contexts),
        );
        for (const m of replies.filter((x) => x.type === REP.META_CONTEXT)) {
          contextIds.set(m.data.toString('utf8', 4), m.data.readUInt32BE(0));
        }
      }
    }
    const replies = await this.option(OPT.GO, encodeInfoRequest(options.name ?? '', [INFO.BLOCK_SIZE]));
    const last = replies[replies.length - 1]!;
    if (last.type !== REP.ACK) throw new Error(`GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    const info = replies.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT)!;
    return {
      size: Number(info.data.readBigUInt64BE(2)),
      flags: info.data.readUInt16BE(10),
      contextIds,
    };
  }

  // --- transmission ---

  request(type: number, cookie: number, offset: number | bigint, length: number, flags = 0, payload?: Buffer): void {
    this.send(encodeRequest(type, flags, BigInt(cookie), offset, length, payload));
  }

  /** One simple reply (header only; a read's data is taken with take()). */
  async simpleReply(): Promise<{ error: number; cookie: number }> {
    const head = await this.take(16);
    const r = decodeReply(head);
    if (r?.kind !== 'simple')
      throw new Error(`expected a simple reply, got magic 0x${head.readUInt32BE(0).toString(16)}`);
    return { error: r.error, cookie: Number(r.cookie) };
  }

  /** The chunks of one structured reply, up to the one with DONE. */
  async structuredReply(): Promise<Array<{ flags: number; type: number; cookie: number; payload: Buffer }>> {
    const chunks: Array<{ flags: number; type: number; cookie: number; payload: Buffer }> = [];
    for (;;) {
      await this.need(20);
      const length = this.#buf.readUInt32BE(16);
      const all = await this.take(20 + length);
      const r = decodeReply(all);
      if (r?.kind !== 'chunk') throw new Error('expected a structured chunk');
      chunks.push({ flags: r.flags, type: r.type, cookie: Number(r.cookie), payload: Buffer.from(r.payload) });
      if (r.flags & 1) return chunks;
    }
  }

  /** Any one reply message: a simple reply or one chunk. */
  async anyReply(): Promise<
    | { kind: 'simple'; error: number; cookie: number }
    | { kind: 'chunk'; flags: number; type: number; cookie: number; payload: Buffer }
  > {
    await this.need(4);
    if (this.#buf.readUInt32BE(0) === 0x67446698) return { kind: 'simple', ...(await this.simpleReply()) };
    await this.need(20);
    const length = this.#buf.readUInt32BE(16);
    const all = await this.take(20 + length);
    const r = decodeReply(all);
    if (r?.kind !== 'chunk') throw new Error('bad reply');
    return { kind: 'chunk', flags: r.flags, type: r.type, cookie: Number(r.cookie), payload: Buffer.from(r.payload) };
  }

  /** Reads `length` bytes at `offset` through structured replies, reassembling data and holes. */
  async read(offset: number, length: number, cookie = 1, flags = 0): Promise<Buffer> {
    this.request(CMD.READ, cookie, offset, length, flags);
    const out = Buffer.alloc(length);
    for (const c of await this.structuredReply()) {
      if (c.type === 1) {
        const at = Number(c.payload.readBigUInt64BE(0)) - offset;
        c.payload.copy(out, at, 8);
      } else if (c.type === 2) {
        // a hole: zeros, already there
      } else if (c.type >= 0x8000) {
        throw new Error(`read failed: error ${c.payload.readUInt32BE(0)} ${c.payload.toString('utf8', 6)}`);
      }
    }
    return out;
  }

  async write(offset: number, data: Buffer, cookie = 2, flags = 0): Promise<number> {
    this.request(CMD.WRITE, cookie, offset, data.length, flags, data);
    const r = await this.anyReply();
    if (r.kind === 'simple') return r.error;
    return r.type >= 0x8000 ? r.payload.readUInt32BE(0) : 0;
  }
}

/** The error value of a reply message (0 for success). */
export function replyError(
  r: { kind: 'simple'; error: number } | { kind: 'chunk'; type: number; payload: Buffer },
): number {
  if (r.kind === 'simple') return r.error;
  return r.type >= 0x8000 ? r.payload.readUInt32BE(0) : 0;
}
