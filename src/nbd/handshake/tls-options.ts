/**
 * NBD_OPT_STARTTLS, and FORCEDTLS: until TLS is up, STARTTLS is the only option served (ABORT
 * is answered before this gate).
 */
import { SocketInput } from '../../nbd-wire/input.js';
import { OPT, REP } from '../../nbd-wire/protocol.js';
import { startTls } from '../tls.js';
import { HandshakeError, type Negotiation, type OptionOutcome } from './negotiation.js';

/** Answers an option while TLS is required and not started. */
export async function answerBeforeTls(n: Negotiation, data: Buffer): Promise<OptionOutcome> {
  const option = n.option;
  if (option === OPT.STARTTLS) return upgrade(n, data);
  const message = `Option 0x${option.toString(16)} not permitted before TLS`;
  // EXPORT_NAME has no error reply.
  if (option === OPT.EXPORT_NAME) throw new HandshakeError(message);
  n.error(REP.ERR_TLS_REQD, message);
  return 'more';
}

/** STARTTLS: acknowledges it, then runs the TLS handshake on the connection. */
async function upgrade(n: Negotiation, data: Buffer): Promise<OptionOutcome> {
  if (data.length > 0) {
    n.refuseData();
    throw new HandshakeError('STARTTLS with data');
  }
  n.reply(REP.ACK);
  // Bytes the client sent before it could have seen the ACK are not trusted (CVE-2021-3716).
  if (n.input.queue.length > 0) throw new HandshakeError('Data received after STARTTLS before the TLS handshake');
  n.input.detach();
  n.socket = await startTls(n.socket, n.options.tls!);
  n.input = new SocketInput(n.socket);
  n.tlsActive = true;
  return 'more';
}

/** STARTTLS when TLS is already up, or not configured. */
export function refuseStartTls(n: Negotiation, data: Buffer): OptionOutcome {
  if (data.length > 0) return n.refuseData();
  if (n.tlsActive) n.error(REP.ERR_INVALID, 'TLS already enabled');
  else n.error(REP.ERR_POLICY, 'TLS not configured');
  return 'more';
}
