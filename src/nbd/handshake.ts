/**
 * The server side of the fixed newstyle handshake: greeting, client flags, then options until
 * NBD_OPT_EXPORT_NAME or a successful NBD_OPT_GO. Replies mirror qemu-nbd 7.2 (which info it
 * sends, which errors, which contexts), with limits against hostile clients: options longer
 * than 64 KiB and strings longer than 4096 bytes are refused, and a client that sends options
 * without reading the replies is dropped. With TLS credentials the server is in FORCEDTLS mode:
 * before STARTTLS every option except ABORT gets NBD_REP_ERR_TLS_REQD, EXPORT_NAME drops the
 * connection, and no plaintext sent before STARTTLS is ever read after it.
 */
import type { Duplex } from 'node:stream';
import type { NbdExport } from './export.js';
import {
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerReply,
} from './handshake-codec.js';
import { SocketInput } from './input.js';
import {
  CONTEXT_ALLOCATION_DEPTH,
  CONTEXT_BASE_ALLOCATION,
  CONTEXT_ID_ALLOCATION_DEPTH,
  CONTEXT_ID_BASE_ALLOCATION,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  INFO,
  MAX_OPTION_LENGTH,
  MAX_STRING,
  OPT,
  OPTION_HEADER_SIZE,
  optionName,
  REP,
  TF,
} from './protocol.js';
import { startTls, type TlsCredentials } from './tls.js';

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
  /** The transmission flags the client was sent. */
  flags: number;
  tls: boolean;
}

/** Bytes of replies the client has not read after which it is considered hostile. */
const MAX_UNREAD_REPLIES = 1 << 20;

interface MetaSelection {
  exportName: string;
  base: boolean;
  depth: boolean;
}

/**
 * Negotiates with one client. Resolves with the transmission state, or undefined when the
 * client ended the handshake itself (NBD_OPT_ABORT); rejects with HandshakeError or InputClosed
 * when the connection must be dropped.
 */
export async function negotiate(
  socket: Duplex,
  input: SocketInput,
  options: HandshakeOptions,
): Promise<Negotiated | undefined> {
  const exp = options.export;
  const io = { socket, input };
  let tlsActive = false;
  let option = 0;

  const send = (buf: Buffer) => {
    if (io.socket.writableLength > MAX_UNREAD_REPLIES) {
      throw new HandshakeError('The client sends options without reading the replies');
    }
    io.socket.write(buf);
  };
  const reply = (type: number, data?: Buffer) => send(encodeOptionReply(option, type, data));
  const error = (type: number, message: string) => send(encodeOptionError(option, type, message));

  socket.write(encodeGreeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
  await input.need(4);
  const clientFlags = input.queue.take(4).readUInt32BE(0);
  const fixed = (clientFlags & FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (clientFlags & FLAG_NO_ZEROES) !== 0;
  if ((clientFlags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)) !== 0) {
    throw new HandshakeError(`Unknown client flags 0x${clientFlags.toString(16)} received`);
  }

  let structured = false;
  let meta: MetaSelection | undefined;

  const transmissionFlags = () => exp.flags | (structured ? TF.SEND_DF : 0);
  const entered = (name: string): Negotiated => {
    const selected = meta !== undefined && meta.exportName === name;
    return {
      socket: io.socket,
      input: io.input,
      structured,
      baseAllocation: selected && meta!.base,
      allocationDepth: selected && meta!.depth,
      flags: transmissionFlags(),
      tls: tlsActive,
    };
  };

  for (;;) {
    await io.input.need(OPTION_HEADER_SIZE);
    const [hb, ho] = io.input.queue.peekSmall(OPTION_HEADER_SIZE);
    const header = decodeOptionHeader(hb, ho);
    io.input.queue.skip(OPTION_HEADER_SIZE);
    option = header.option;
    if (!header.magicOk) throw new HandshakeError('Bad option magic received');
    if (header.length > MAX_OPTION_LENGTH) {
      if (fixed)
        error(REP.ERR_TOO_BIG, `Option length ${header.length} is larger than the maximum (${MAX_OPTION_LENGTH})`);
      throw new HandshakeError(`Option length ${header.length} is larger than the maximum (${MAX_OPTION_LENGTH})`);
    }
    await io.input.need(header.length);
    const data = io.input.queue.take(header.length);

    if (!fixed) {
      // Plain newstyle: EXPORT_NAME is the only option there is.
      if (option !== OPT.EXPORT_NAME || options.tls)
        throw new HandshakeError(`Unsupported option ${option} in newstyle`);
      exportName(data);
      return entered(data.toString('utf8'));
    }

    if (options.tls && !tlsActive) {
      switch (option) {
        case OPT.STARTTLS:
          if (data.length > 0) {
            error(REP.ERR_INVALID, `${optionName(option)} has unexpected length`);
            throw new HandshakeError('STARTTLS with data');
          }
          reply(REP.ACK);
          // Bytes the client sent before it could have seen the ACK are not trusted (CVE-2021-3716).
          if (io.input.queue.length > 0)
            throw new HandshakeError('Data received after STARTTLS before the TLS handshake');
          io.input.detach();
          io.socket = await startTls(io.socket, options.tls);
          io.input = new SocketInput(io.socket);
          tlsActive = true;
          continue;
        case OPT.EXPORT_NAME:
          throw new HandshakeError(`Option 0x${option.toString(16)} not permitted before TLS`);
        case OPT.ABORT:
          reply(REP.ACK);
          return undefined;
        default:
          error(REP.ERR_TLS_REQD, `Option 0x${option.toString(16)} not permitted before TLS`);
          continue;
      }
    }

    if (options.shuttingDown?.() && option !== OPT.ABORT) {
      error(REP.ERR_SHUTDOWN, 'The server is shutting down');
      continue;
    }

    switch (option) {
      case OPT.LIST:
        if (data.length > 0) {
          error(REP.ERR_INVALID, `${optionName(option)} has unexpected length`);
          break;
        }
        send(encodeServerReply(exp.name, exp.description ?? ''));
        reply(REP.ACK);
        break;

      case OPT.ABORT:
        reply(REP.ACK);
        return undefined;

      case OPT.EXPORT_NAME:
        exportName(data);
        return entered(data.toString('utf8'));

      case OPT.INFO:
      case OPT.GO: {
        const req = decodeInfoRequest(data);
        if (!req.ok) {
          error(REP.ERR_INVALID, req.message);
          break;
        }
        if (req.name !== exp.name) {
          error(REP.ERR_UNKNOWN, `export '${sanitize(req.name)}' not present`);
          break;
        }
        const blockSize = req.requests.includes(INFO.BLOCK_SIZE);
        if (req.requests.includes(INFO.NAME)) send(encodeInfoString(option, INFO.NAME, exp.name));
        if (exp.description !== undefined) send(encodeInfoString(option, INFO.DESCRIPTION, exp.description));
        // As qemu-nbd: always sent; the real minimum only to clients that promise to obey it.
        const minimum = option === OPT.INFO || blockSize ? exp.minimumBlockSize : 1;
        send(
          encodeInfoBlockSize(option, {
            minimum,
            preferred: Math.max(4096, minimum),
            maximum: exp.maximumPayload,
          }),
        );
        send(encodeInfoExport(option, exp.backend.length, transmissionFlags()));
        if (option === OPT.INFO && !blockSize && exp.minimumBlockSize > 1) {
          error(REP.ERR_BLOCK_SIZE_REQD, 'request NBD_INFO_BLOCK_SIZE to use this export');
          break;
        }
        reply(REP.ACK);
        if (option === OPT.GO) return entered(req.name);
        break;
      }

      case OPT.STARTTLS:
        if (data.length > 0) error(REP.ERR_INVALID, `${optionName(option)} has unexpected length`);
        else if (tlsActive) error(REP.ERR_INVALID, 'TLS already enabled');
        else error(REP.ERR_POLICY, 'TLS not configured');
        break;

      case OPT.STRUCTURED_REPLY:
        if (data.length > 0) error(REP.ERR_INVALID, `${optionName(option)} has unexpected length`);
        else if (structured) error(REP.ERR_INVALID, 'structured reply already negotiated');
        else {
          reply(REP.ACK);
          structured = true;
        }
        break;

      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT: {
        const set = option === OPT.SET_META_CONTEXT;
        // A SET replaces the selection even when it fails.
        if (set) meta = undefined;
        if (set && !structured) {
          error(REP.ERR_INVALID, `request option '${optionName(option)}' when structured reply is not negotiated`);
          break;
        }
        const req = decodeMetaContextRequest(data);
        if (!req.ok) {
          error(REP.ERR_INVALID, req.message);
          break;
        }
        if (req.exportName !== exp.name) {
          error(REP.ERR_UNKNOWN, `export '${sanitize(req.exportName)}' not present`);
          break;
        }
        const selection = selectContexts(req.queries, !set, exp.allocationDepth);
        if (selection.base)
          send(encodeMetaContextReply(option, set ? CONTEXT_ID_BASE_ALLOCATION : 0, CONTEXT_BASE_ALLOCATION));
        if (selection.depth) {
          send(encodeMetaContextReply(option, set ? CONTEXT_ID_ALLOCATION_DEPTH : 0, CONTEXT_ALLOCATION_DEPTH));
        }
        reply(REP.ACK);
        if (set) meta = { exportName: req.exportName, ...selection };
        break;
      }

      default:
        error(REP.ERR_UNSUP, `Unsupported option ${option} (${optionName(option)})`);
        break;
    }
  }

  /** Checks an NBD_OPT_EXPORT_NAME (which cannot fail politely) and sends its reply. */
  function exportName(data: Buffer): void {
    if (data.length > MAX_STRING) throw new HandshakeError(`Export name of ${data.length} bytes is too long`);
    const name = data.toString('utf8');
    if (data.includes(0) || name !== exp.name) throw new HandshakeError(`Export '${sanitize(name)}' not found`);
    io.socket.write(encodeExportNameReply(exp.backend.length, transmissionFlags(), noZeroes));
  }
}

/**
 * The contexts a list of queries selects, as qemu-nbd reads them: "base:allocation" and
 * "qemu:allocation-depth" by name; "base:" and "qemu:" as wildcards only when listing; no
 * queries when listing means everything; anything else is ignored.
 */
export function selectContexts(
  queries: ReadonlyArray<string | null>,
  listing: boolean,
  depthAvailable: boolean,
): { base: boolean; depth: boolean } {
  if (listing && queries.length === 0) return { base: true, depth: depthAvailable };
  let base = false;
  let depth = false;
  for (const q of queries) {
    if (q === null) continue;
    if (q.startsWith('base:')) {
      const leaf = q.slice(5);
      if (leaf === 'allocation' || (leaf === '' && listing)) base = true;
    } else if (q.startsWith('qemu:')) {
      const leaf = q.slice(5);
      if (leaf === 'allocation-depth' || (leaf === '' && listing)) depth = depthAvailable || depth;
    }
  }
  return { base, depth };
}

/** A client-supplied name, shortened for an error message as qemu-nbd does. */
function sanitize(name: string): string {
  return name.length < 80 ? name : `${name.slice(0, 80)}...`;
}
