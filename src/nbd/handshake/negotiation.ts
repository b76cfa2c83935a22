/**
 * The state of one handshake, shared by the option handlers: the connection (which STARTTLS
 * replaces), what the client has negotiated so far, and the replies to the option being
 * answered.
 */
import type { Duplex } from 'node:stream';
import { encodeOptionError, encodeOptionReply } from '../../nbd-wire/handshake-codec.js';
import type { SocketInput } from '../../nbd-wire/input.js';
import { optionName, REP, TF } from '../../nbd-wire/protocol.js';
import type { NbdExport } from '../export.js';
import type { TlsCredentials } from '../tls.js';

/** A client broke the protocol (or the server's limits): the connection must be dropped. */
export class HandshakeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HandshakeError';
  }
}

export interface HandshakeOptions {
  export: NbdExport;
  /** With credentials, TLS is required (FORCEDTLS). */
  tls?: TlsCredentials;
  /** True while the server shuts down: options get NBD_REP_ERR_SHUTDOWN. */
  shuttingDown?: () => boolean;
}

/** The outcome of a handshake that entered the transmission phase. */
export interface Negotiated {
  /** The socket to use from now on (a TLS socket after STARTTLS). */
  socket: Duplex;
  input: SocketInput;
  structured: boolean;
  /** The selected metadata contexts. */
  baseAllocation: boolean;
  allocationDepth: boolean;
  /** Indexes of the export's dirty bitmaps selected. */
  dirtyBitmaps: number[];
  /** The transmission flags the client was sent. */
  flags: number;
  tls: boolean;
}

/** Where answering an option leads: more options, the transmission phase, or the end (ABORT). */
export type OptionOutcome = 'more' | 'aborted' | Negotiated;

/** The metadata contexts the last SET_META_CONTEXT selected, for the export it named. */
export interface MetaSelection {
  exportName: string;
  base: boolean;
  depth: boolean;
  bitmaps: number[];
}

/** Bytes of replies the client has not read after which it is considered hostile. */
const MAX_UNREAD_REPLIES = 1 << 20;

export class Negotiation {
  readonly export: NbdExport;
  readonly options: HandshakeOptions;
  socket: Duplex;
  input: SocketInput;
  tlsActive = false;
  /** The client speaks fixed newstyle (else only EXPORT_NAME exists). */
  fixedNewstyle = false;
  /** The client asked for no zero padding after the EXPORT_NAME reply. */
  noZeroes = false;
  /** The option being answered: every reply names it. */
  option = 0;
  structured = false;
  meta: MetaSelection | undefined;

  constructor(socket: Duplex, input: SocketInput, options: HandshakeOptions) {
    this.socket = socket;
    this.input = input;
    this.options = options;
    this.export = options.export;
  }

  /** TLS is required and not started yet. */
  get tlsRequired(): boolean {
    return this.options.tls !== undefined && !this.tlsActive;
  }

  /** Sends an option reply, or drops a client that leaves its replies unread. */
  send(buf: Buffer): void {
    if (this.socket.writableLength > MAX_UNREAD_REPLIES) {
      throw new HandshakeError('The client sends options without reading the replies');
    }
    this.socket.write(buf);
  }

  reply(type: number, data?: Buffer): void {
    this.send(encodeOptionReply(this.option, type, data));
  }

  error(type: number, message: string): void {
    this.send(encodeOptionError(this.option, type, message));
  }

  /** Refuses an option that must carry no data but did. */
  refuseData(): 'more' {
    this.error(REP.ERR_INVALID, `${optionName(this.option)} has unexpected length`);
    return 'more';
  }

  /** Refuses an option that names another export than the one served. */
  refuseUnknownExport(name: string): 'more' {
    this.error(REP.ERR_UNKNOWN, `export '${sanitize(name)}' not present`);
    return 'more';
  }

  transmissionFlags(): number {
    return this.export.flags | (this.structured ? TF.SEND_DF : 0);
  }

  /** Enters the transmission phase on export `name`, with the contexts selected for it. */
  entered(name: string): Negotiated {
    const meta = this.meta?.exportName === name ? this.meta : undefined;
    return {
      socket: this.socket,
      input: this.input,
      structured: this.structured,
      baseAllocation: meta?.base ?? false,
      allocationDepth: meta?.depth ?? false,
      dirtyBitmaps: meta?.bitmaps ?? [],
      flags: this.transmissionFlags(),
      tls: this.tlsActive,
    };
  }
}

/** A client-supplied name, shortened for an error message as qemu-nbd does. */
export function sanitize(name: string): string {
  return name.length < 80 ? name : `${name.slice(0, 80)}...`;
}
