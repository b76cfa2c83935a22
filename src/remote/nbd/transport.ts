/**
 * Opens the byte stream to an NBD server: a TCP connection or a Unix socket, as the URI says,
 * failing with the host's reason ("Connection refused") in a VdiskError rather than an
 * unhandled socket error.
 */
import net from 'node:net';
import { fromSystemError } from '../../block/errors.js';
import type { NbdUri } from './uri.js';

/** Where the URI points, as QEMU says it in errors: '127.0.0.1:10809' or the socket path. */
export function endpointName(uri: NbdUri): string {
  return uri.transport === 'unix' ? uri.socket! : `${uri.host}:${uri.port}`;
}

/** Connects; `signal` aborts the attempt (a connect timeout). */
export function connectSocket(uri: NbdUri, signal: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      uri.transport === 'unix' ? net.connect({ path: uri.socket! }) : net.connect({ host: uri.host!, port: uri.port! });
    const fail = (err: unknown) => {
      socket.destroy();
      signal.removeEventListener('abort', aborted);
      reject(fromSystemError(err, `Failed to connect to '${endpointName(uri)}'`));
    };
    const aborted = () => fail(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }));
    if (signal.aborted) return aborted();
    signal.addEventListener('abort', aborted, { once: true });
    socket.once('error', fail);
    socket.once('connect', () => {
      socket.off('error', fail);
      signal.removeEventListener('abort', aborted);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}
