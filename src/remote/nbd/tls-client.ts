/**
 * The client side of NBD_OPT_STARTTLS with X.509 credentials laid out as QEMU's
 * tls-creds-x509 object (endpoint=client) and libnbd's tls-certificates directory expect them:
 * ca-cert.pem (the CA that signed the server's certificate), and, when the server asks for a
 * client certificate, client-cert.pem with client-key.pem.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { fromSystemError, VdiskError } from '../../block/errors.js';

export interface ClientTlsCredentials {
  readonly dir: string;
  readonly ca: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

async function readOptional(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw fromSystemError(err, `Unable to access credentials ${file}`);
  }
}

/** Loads the credentials in `dir`; the CA certificate is required, the client's own pair optional. */
export async function loadClientCredentials(dir: string): Promise<ClientTlsCredentials> {
  const caFile = path.join(dir, 'ca-cert.pem');
  const [ca, cert, key] = await Promise.all([
    readOptional(caFile),
    readOptional(path.join(dir, 'client-cert.pem')),
    readOptional(path.join(dir, 'client-key.pem')),
  ]);
  if (!ca) throw new VdiskError('ENOENT', `Unable to access credentials ${caFile}: No such file or directory`);
  if ((cert === undefined) !== (key === undefined)) {
    throw new VdiskError('EINVAL', `Invalid TLS credentials in ${dir}: client-cert.pem and client-key.pem go together`);
  }
  return { dir, ca, ...(cert && key ? { cert, key } : {}) };
}

/**
 * Runs the client side of a TLS handshake over `socket`. The server's certificate must be signed
 * by the CA, and name `servername` when the connection is TCP (a Unix socket has no host name to
 * check), unless `verifyPeer` is false.
 */
export function startClientTls(
  socket: Duplex,
  creds: ClientTlsCredentials,
  servername: string | undefined,
  verifyPeer: boolean,
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = tls.connect({
      socket,
      ca: creds.ca,
      ...(creds.cert && creds.key ? { cert: creds.cert, key: creds.key } : {}),
      minVersion: 'TLSv1.2',
      rejectUnauthorized: verifyPeer,
      ...(servername !== undefined && !/^[\d.]+$|:/.test(servername) ? { servername } : {}),
      checkServerIdentity: (_host, cert) =>
        servername === undefined ? undefined : (tls.checkServerIdentity(servername, cert) ?? undefined),
    });
    const fail = (err: Error) => {
      secure.destroy();
      const reason = (err as { reason?: unknown }).reason;
      reject(
        new VdiskError('EACCES', `TLS handshake failed: ${typeof reason === 'string' ? reason : err.message}`, {
          cause: err,
        }),
      );
    };
    secure.once('error', fail);
    secure.once('secureConnect', () => {
      secure.off('error', fail);
      resolve(secure);
    });
  });
}
