/**
 * The guest of the killed-server tests: an NBD client over a Unix socket that keeps many
 * requests in flight (simple replies, matched by cookie), writes recognisable data (each
 * 512-byte sector names the write and the sector), and records on a shared clock when each
 * request was sent and answered, as the GuestOp records GuestModel judges a crash state by.
 * A request still unanswered when the server dies keeps ack = Infinity: it may or may not have
 * reached the image.
 */
import { ByteQueue } from '../../../src/nbd-wire/input.js';
import { CMD, CMD_FLAG } from '../../../src/nbd-wire/protocol.js';
import { encodeRequest } from '../../../src/nbd-wire/transmission-codec.js';
import { RawClient } from '../../helpers/nbd-client.js';
import { type Clock, type GuestOp, SECTOR, sectorPattern } from './guest.js';

interface Pending {
  op?: GuestOp;
  readLength?: number;
  resolve: (data: Buffer | undefined) => void;
  reject: (err: Error) => void;
}

const REPLY_MAGIC = 0x67446698;

/** The server answered a request with an error (not a connection that went away). */
export class ErrorReply extends Error {
  readonly errno: number;
  constructor(errno: number) {
    super(`the server answered error ${errno}`);
    this.errno = errno;
  }
}

export class NbdGuest {
  readonly ops: GuestOp[] = [];
  readonly size: number;
  readonly #client: RawClient;
  readonly #clock: Clock;
  readonly #pending = new Map<number, Pending>();
  readonly #input = new ByteQueue();
  #nextCookie = 1;
  #nextId: number;
  #dead: Error | undefined;

  private constructor(client: RawClient, size: number, clock: Clock, firstId: number) {
    this.#client = client;
    this.size = size;
    this.#clock = clock;
    this.#nextId = firstId;
    const socket = client.socket;
    socket.removeAllListeners('data');
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    void client.closed.then(() => this.#fail(new Error('the server closed the connection')));
  }

  /** Connects and negotiates (no structured replies). `firstId` keeps write ids unique across rounds. */
  static async connect(socket: string, clock: Clock, firstId: number): Promise<NbdGuest> {
    const client = await RawClient.connect({ socket });
    const { size } = await client.handshake({ structured: false });
    if (client.pending !== 0) throw new Error('unexpected bytes after the handshake');
    return new NbdGuest(client, size, clock, firstId);
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  get nextId(): number {
    return this.#nextId;
  }

  write(offset: number, length: number, fua = false): Promise<void> {
    const id = this.#nextId++;
    const data = Buffer.alloc(length);
    for (let s = 0; s < length / SECTOR; s++) {
      sectorPattern(id, offset / SECTOR + s, data.subarray(s * SECTOR, (s + 1) * SECTOR));
    }
    const op = this.#op({ id, kind: 'write', offset, length, data, fua });
    return this.#send(CMD.WRITE, fua ? CMD_FLAG.FUA : 0, offset, length, op, data).then(() => {});
  }

  zero(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    const op = this.#op({ id: this.#nextId++, kind: 'zero', offset, length, fua: false });
    return this.#send(CMD.WRITE_ZEROES, mayUnmap ? 0 : CMD_FLAG.NO_HOLE, offset, length, op).then(() => {});
  }

  /** Trims whole clusters (the server leaves partial clusters alone; the model knows whole ones). */
  trim(offset: number, length: number): Promise<void> {
    const op = this.#op({ id: this.#nextId++, kind: 'discard', offset, length, fua: false });
    return this.#send(CMD.TRIM, 0, offset, length, op).then(() => {});
  }

  flush(): Promise<void> {
    const op = this.#op({ id: this.#nextId++, kind: 'flush', offset: 0, length: 0, fua: false });
    return this.#send(CMD.FLUSH, 0, 0, 0, op).then(() => {});
  }

  /** A read, not recorded. */
  async read(offset: number, length: number): Promise<Buffer> {
    return (await this.#send(CMD.READ, 0, offset, length, undefined, undefined, length)) as Buffer;
  }

  close(): void {
    this.#client.close();
  }

  #op(op: Omit<GuestOp, 'issue' | 'ack' | 'durableAt'>): GuestOp {
    const full: GuestOp = {
      ...op,
      issue: this.#clock.tick(),
      ack: Number.POSITIVE_INFINITY,
      durableAt: Number.POSITIVE_INFINITY,
    };
    this.ops.push(full);
    return full;
  }

  #send(
    type: number,
    flags: number,
    offset: number,
    length: number,
    op?: GuestOp,
    payload?: Buffer,
    readLength?: number,
  ): Promise<Buffer | undefined> {
    if (this.#dead) return Promise.reject(this.#dead);
    const cookie = this.#nextCookie++;
    return new Promise((resolve, reject) => {
      this.#pending.set(cookie, { op, readLength, resolve, reject });
      this.#client.send(encodeRequest(type, flags, BigInt(cookie), offset, length, payload));
    });
  }

  #receive(chunk: Buffer): void {
    const input = this.#input;
    input.push(chunk);
    while (input.length >= 16) {
      const [head, at] = input.peekSmall(16);
      if (head.readUInt32BE(at) !== REPLY_MAGIC) {
        this.#fail(new Error(`bad reply magic 0x${head.readUInt32BE(at).toString(16)}`));
        this.#client.close();
        return;
      }
      const error = head.readUInt32BE(at + 4);
      const cookie = Number(head.readBigUInt64BE(at + 8));
      const p = this.#pending.get(cookie);
      if (!p) {
        this.#fail(new Error(`a reply to unknown cookie ${cookie}`));
        this.#client.close();
        return;
      }
      const dataLength = error === 0 ? (p.readLength ?? 0) : 0;
      if (input.length < 16 + dataLength) return;
      input.skip(16);
      const data = dataLength ? input.take(dataLength) : undefined;
      this.#pending.delete(cookie);
      if (error !== 0) {
        p.reject(new ErrorReply(error));
        continue;
      }
      if (p.op) p.op.ack = this.#clock.tick();
      p.resolve(data);
    }
  }

  #fail(err: Error): void {
    this.#dead ??= err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}
