/**
 * From a URI to a connection in the transmission phase: connect, run the handshake (with TLS
 * when the URI says nbds), all within the connect timeout. Whatever fails, the socket is closed
 * and the caller gets one VdiskError saying why.
 */
import type { Duplex } from 'node:stream';
import { VdiskError } from '../../block/errors.js';
import { InputClosed } from '../../nbd-wire/input.js';
import type { CheckedClientOptions } from './client-options.js';
import { NbdConnection } from './connection.js';
import { negotiate } from './handshake.js';
import { OptionChannel } from './option-channel.js';
import { type ClientTlsCredentials, loadClientCredentials, startClientTls } from './tls-client.js';
import { connectSocket } from './transport.js';
import type { NbdUri } from './uri.js';

/** Reads the TLS credentials an nbds URI needs (once per image, not per connection). */
export async function credentialsFor(
  uri: NbdUri,
  options: CheckedClientOptions,
): Promise<ClientTlsCredentials | undefined> {
  if (!uri.tls) return undefined;
  const dir = options.tlsCreds ?? uri.tlsCertificates;
  if (dir === undefined) {
    throw new VdiskError('EINVAL', 'TLS needs credentials (?tls-certificates=DIR in the URI)');
  }
  return loadClientCredentials(dir);
}

export async function openConnection(
  uri: NbdUri,
  options: CheckedClientOptions,
  creds: ClientTlsCredentials | undefined,
): Promise<NbdConnection> {
  const abort = new AbortController();
  let timedOut = false;
  let socket: Duplex | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
    socket?.destroy();
  }, options.connectTimeoutMs);
  try {
    socket = await connectSocket(uri, abort.signal);
    const channel = new OptionChannel(socket);
    const startTls = creds
      ? async (plain: Duplex) => {
          const secure = await startClientTls(plain, creds, uri.host, uri.tlsVerifyPeer);
          socket = secure;
          return secure;
        }
      : undefined;
    const negotiated = await negotiate(channel, { exportName: uri.exportName, ...(startTls ? { startTls } : {}) });
    const { socket: open, input } = channel.handOver();
    return new NbdConnection(open, input, negotiated, { name: uri.displayName, timeoutMs: options.timeoutMs });
  } catch (err) {
    socket?.destroy();
    if (timedOut) {
      throw new VdiskError('ETIMEDOUT', `No connection within ${options.connectTimeoutMs / 1000} s`, { cause: err });
    }
    if (err instanceof InputClosed) {
      // OpenSSL's errors carry a short reason: a TLS 1.3 server refuses a client certificate
      // only after the client's side of the handshake is done, as an alert on the next read.
      const reason = (err.cause as { reason?: unknown } | undefined)?.reason;
      if (typeof reason === 'string') throw new VdiskError('EACCES', `TLS failed: ${reason}`, { cause: err });
      throw new VdiskError('EIO', err.message, { cause: err });
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
