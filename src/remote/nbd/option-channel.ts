/**
 * The client's side of the handshake as a conversation: send an option, read its replies. Every
 * reply is checked before its data is read (magic, the option it answers, a length vdisk is
 * willing to buffer), so a hostile server cannot make the client wait for or hold gigabytes.
 */
import type { Duplex } from 'node:stream';
import { encodeOption } from '../../nbd-wire/handshake-codec.js';
import { InputClosed, SocketInput } from '../../nbd-wire/input.js';
import {
  OPTION_REPLY_HEADER_SIZE,
  OPTION_REPLY_MAGIC_HI,
  OPTION_REPLY_MAGIC_LO,
  optionName,
} from '../../nbd-wire/protocol.js';
import { protocolError } from './errors.js';

/** The longest option reply read: far above any real one (names and descriptions are ≤ 4096). */
const MAX_REPLY_DATA = 64 * 1024;

export interface OptionReply {
  type: number;
  data: Buffer;
}

export class OptionChannel {
  #socket: Duplex;
  #input: SocketInput;

  constructor(socket: Duplex) {
    this.#socket = socket;
    this.#input = new SocketInput(socket, 'server');
  }

  get socket(): Duplex {
    return this.#socket;
  }

  get input(): SocketInput {
    return this.#input;
  }

  /** Consumes exactly `n` bytes (a copy the caller may keep). */
  async read(n: number): Promise<Buffer> {
    await this.#need(n);
    return Buffer.from(this.#input.queue.take(n));
  }

  write(bytes: Buffer): void {
    this.#socket.write(bytes);
  }

  send(option: number, data?: Buffer): void {
    this.#socket.write(encodeOption(option, data));
  }

  /** The next reply, which must answer `option`. */
  async reply(option: number): Promise<OptionReply> {
    const head = await this.read(OPTION_REPLY_HEADER_SIZE);
    if (head.readUInt32BE(0) !== OPTION_REPLY_MAGIC_HI || head.readUInt32BE(4) !== OPTION_REPLY_MAGIC_LO) {
      throw protocolError(`bad option reply magic while negotiating ${optionName(option)}`);
    }
    const answered = head.readUInt32BE(8);
    if (answered !== option) {
      throw protocolError(`a reply to ${optionName(answered)} while negotiating ${optionName(option)}`);
    }
    const length = head.readUInt32BE(16);
    if (length > MAX_REPLY_DATA) throw protocolError(`an option reply of ${length} bytes to ${optionName(option)}`);
    return { type: head.readUInt32BE(12), data: await this.read(length) };
  }

  /** Continues over `secure` (after STARTTLS); nothing may have arrived in plaintext since the ACK. */
  upgrade(secure: Duplex): void {
    if (this.#input.queue.length > 0) throw protocolError('plaintext bytes after the STARTTLS reply');
    this.#input.detach();
    this.#socket = secure;
    this.#input = new SocketInput(secure, 'server');
  }

  /** The socket and its queued bytes, for the transmission phase to take over. */
  handOver(): { socket: Duplex; input: SocketInput } {
    return { socket: this.#socket, input: this.#input };
  }

  async #need(n: number): Promise<void> {
    try {
      await this.#input.need(n);
    } catch (err) {
      if (err instanceof InputClosed)
        throw new InputClosed(`${err.message} during the handshake`, { cause: err.cause });
      throw err;
    }
  }
}
