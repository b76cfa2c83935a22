/**
 * TLS for NBD_OPT_STARTTLS with X.509 certificates laid out as QEMU's tls-creds-x509 object
 * expects them in its `dir`: ca-cert.pem, server-cert.pem, server-key.pem (and an optional
 * ca-crl.pem). As in QEMU (verify-peer=on by default), clients must present a certificate
 * signed by the CA unless peer verification is turned off.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { fromSystemError, VdiskError } from '../block/errors.js';

export interface TlsCredentials {
  readonly dir: string;
  readonly verifyPeer: boolean;
  /** The certificate files as read, for tls.createServer(). */
  readonly files: { ca: Buffer; cert: Buffer; key: Buffer; crl?: Buffer };
}

async function readCredential(dir: string, name: string, optional = false): Promise<Buffer | undefined> {
  const file = path.join(dir, name);
  try {
    return await readFile(file);
  } catch (err) {
    if (optional && (err as { code?: string }).code === 'ENOENT') return undefined;
    throw fromSystemError(err, `Unable to access credentials ${file}`);
  }
}

/** Loads the credentials in `dir`; fails with a one-line message naming the missing or bad file. */
export async function loadTlsCredentials(dir: string, options: { verifyPeer?: boolean } = {}): Promise<TlsCredentials> {
  const read = await Promise.allSettled([
    readCredential(dir, 'ca-cert.pem'),
    readCredential(dir, 'server-cert.pem'),
    readCredential(dir, 'server-key.pem'),
    readCredential(dir, 'ca-crl.pem', true),
  ]);
  // The first missing file in this order is the one named, whichever read failed first.
  for (const r of read) if (r.status === 'rejected') throw r.reason;
  const [ca, cert, key, crl] = read.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
  const files = { ca: ca!, cert: cert!, key: key!, ...(crl ? { crl } : {}) };
  try {
    // Parse everything now, so that bad credentials stop the server before it listens.
    tls.createSecureContext({ ...files, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new VdiskError(
      'EINVAL',
      `Invalid TLS credentials in ${dir}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  return { dir, verifyPeer: options.verifyPeer ?? true, files };
}

/**
 * Runs the server side of a TLS handshake over `socket` and resolves with the encrypted
 * socket; rejects if the handshake fails or the client's certificate is not trusted. The work
 * is done by a tls.Server that never listens: it is handed the connection, and it is what checks
 * the client's certificate (a bare TLSSocket would not).
 */
export function startTls(socket: Duplex, creds: TlsCredentials): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const server = tls.createServer({
      ...creds.files,
      minVersion: 'TLSv1.2',
      requestCert: creds.verifyPeer,
      rejectUnauthorized: creds.verifyPeer,
    });
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      // OpenSSL's errors carry a short `reason` ("peer did not return a certificate").
      const reason = (err as { reason?: unknown }).reason;
      reject(
        new VdiskError('EACCES', `TLS handshake failed: ${typeof reason === 'string' ? reason : err.message}`, {
          cause: err,
        }),
      );
    };
    server.once('secureConnection', (secure: tls.TLSSocket) => {
      if (settled) return;
      settled = true;
      socket.off('close', closed);
      resolve(secure);
    });
    server.once('tlsClientError', (err: Error) => fail(err));
    const closed = () => fail(new Error('the client closed the connection'));
    socket.once('close', closed);
    server.emit('connection', socket);
  });
}
