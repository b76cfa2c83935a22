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
  readonly context: tls.SecureContext;
  readonly verifyPeer: boolean;
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
  const [ca, cert, key, crl] = await Promise.all([
    readCredential(dir, 'ca-cert.pem'),
    readCredential(dir, 'server-cert.pem'),
    readCredential(dir, 'server-key.pem'),
    readCredential(dir, 'ca-crl.pem', true),
  ]);
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ ca, cert, key, crl, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new VdiskError(
      'EINVAL',
      `Invalid TLS credentials in ${dir}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  return { dir, context, verifyPeer: options.verifyPeer ?? true };
}

/**
 * Runs the server side of a TLS handshake over `socket` and resolves with the encrypted
 * socket; rejects if the handshake fails or the client's certificate is not trusted.
 */
export function startTls(socket: Duplex, creds: TlsCredentials): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: creds.context,
      requestCert: creds.verifyPeer,
      rejectUnauthorized: creds.verifyPeer,
    });
    const fail = (err: Error) => {
      cleanup();
      secure.destroy();
      reject(new VdiskError('EACCES', `TLS handshake failed: ${err.message}`, { cause: err }));
    };
    const closed = () => fail(new Error('the client closed the connection'));
    const cleanup = () => {
      secure.off('error', fail);
      secure.off('close', closed);
      secure.off('secure', done);
    };
    const done = () => {
      // A TLSSocket made by hand does not reject untrusted clients by itself (tls.Server does).
      if (creds.verifyPeer && !secure.authorized) {
        fail(new Error(`client certificate rejected: ${secure.authorizationError ?? 'none presented'}`));
        return;
      }
      cleanup();
      resolve(secure);
    };
    secure.on('error', fail);
    secure.on('close', closed);
    secure.on('secure', done);
  });
}
