/**
 * The server side of the fixed newstyle handshake: greeting, client flags, then options until
 * NBD_OPT_EXPORT_NAME or a successful NBD_OPT_GO. Replies mirror qemu-nbd 7.2 (which info it
 * sends, which errors, which contexts), with limits against hostile clients: options longer
 * than 64 KiB and strings longer than 4096 bytes are refused, and a client that sends options
 * without reading the replies is dropped. With TLS credentials the server is in FORCEDTLS mode:
 * before STARTTLS every option except ABORT gets NBD_REP_ERR_TLS_REQD, EXPORT_NAME drops the
 * connection, and no plaintext sent before STARTTLS is ever read after it.
 *
 * This file reads the options and routes each to its handler; the handlers are grouped by what
 * they negotiate (export-options.ts, reply-options.ts, tls-options.ts).
 */
import type { Duplex } from 'node:stream';
import { decodeOptionHeader, encodeGreeting } from '../../nbd-wire/handshake-codec.js';
import type { SocketInput } from '../../nbd-wire/input.js';
import {
  CLIENT_FLAGS_SIZE,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  MAX_OPTION_LENGTH,
  OPT,
  OPTION_HEADER_SIZE,
  optionName,
  REP,
} from '../../nbd-wire/protocol.js';
import { exportName, infoOrGo, listExports } from './export-options.js';
import {
  HandshakeError,
  type HandshakeOptions,
  type Negotiated,
  Negotiation,
  type OptionOutcome,
} from './negotiation.js';
import { metaContext, structuredReply } from './reply-options.js';
import { answerBeforeTls, refuseStartTls } from './tls-options.js';

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
  const n = new Negotiation(socket, input, options);
  await greet(n);
  for (;;) {
    const data = await readOption(n);
    const outcome = await answerOption(n, data);
    if (outcome === 'aborted') {
      if (n.socket !== socket) {
        // Under TLS the plain socket hears nothing more of the client: it closes with the TLS one.
        n.socket.once('close', () => socket.destroy());
        n.socket.end();
      }
      return undefined;
    }
    if (outcome !== 'more') return outcome;
  }
}

/** Sends the greeting and reads the client's flags. */
async function greet(n: Negotiation): Promise<void> {
  n.socket.write(encodeGreeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
  await n.input.need(CLIENT_FLAGS_SIZE);
  const clientFlags = n.input.queue.take(CLIENT_FLAGS_SIZE).readUInt32BE(0);
  if ((clientFlags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)) !== 0) {
    throw new HandshakeError(`Unknown client flags 0x${clientFlags.toString(16)} received`);
  }
  n.fixedNewstyle = (clientFlags & FLAG_FIXED_NEWSTYLE) !== 0;
  n.noZeroes = (clientFlags & FLAG_NO_ZEROES) !== 0;
}

/** Reads the next option: its code becomes the one answered, its data is returned. */
async function readOption(n: Negotiation): Promise<Buffer> {
  const input = n.input;
  await input.need(OPTION_HEADER_SIZE);
  const [buf, off] = input.queue.peekSmall(OPTION_HEADER_SIZE);
  const header = decodeOptionHeader(buf, off);
  input.queue.skip(OPTION_HEADER_SIZE);
  n.option = header.option;
  if (!header.magicOk) throw new HandshakeError('Bad option magic received');
  if (header.length > MAX_OPTION_LENGTH) {
    const message = `Option length ${header.length} is larger than the maximum (${MAX_OPTION_LENGTH})`;
    // Only a fixed-newstyle client understands an error reply.
    if (n.fixedNewstyle) n.error(REP.ERR_TOO_BIG, message);
    throw new HandshakeError(message);
  }
  await input.need(header.length);
  return input.queue.take(header.length);
}

function answerOption(n: Negotiation, data: Buffer): OptionOutcome | Promise<OptionOutcome> {
  const option = n.option;
  if (!n.fixedNewstyle) {
    // Plain newstyle: EXPORT_NAME is the only option there is.
    if (option !== OPT.EXPORT_NAME || n.options.tls)
      throw new HandshakeError(`Unsupported option ${option} in newstyle`);
    return exportName(n, data);
  }
  // ABORT is answered in every state: before TLS and while shutting down too.
  if (option === OPT.ABORT) {
    n.reply(REP.ACK);
    return 'aborted';
  }
  if (n.tlsRequired) return answerBeforeTls(n, data);
  if (n.options.shuttingDown?.()) {
    n.error(REP.ERR_SHUTDOWN, 'The server is shutting down');
    return 'more';
  }
  switch (option) {
    case OPT.LIST:
      return listExports(n, data);
    case OPT.EXPORT_NAME:
      return exportName(n, data);
    case OPT.INFO:
    case OPT.GO:
      return infoOrGo(n, data);
    case OPT.STARTTLS:
      return refuseStartTls(n, data);
    case OPT.STRUCTURED_REPLY:
      return structuredReply(n, data);
    case OPT.LIST_META_CONTEXT:
    case OPT.SET_META_CONTEXT:
      return metaContext(n, data);
    default:
      n.error(REP.ERR_UNSUP, `Unsupported option ${option} (${optionName(option)})`);
      return 'more';
  }
}
