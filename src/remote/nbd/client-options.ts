/**
 * How vdisk talks to an NBD server: the knobs a caller may turn, checked once, with QEMU's and
 * libnbd's defaults where they have one.
 */
import { VdiskError } from '../../block/errors.js';

export interface NbdClientOptions {
  /** Seconds a request may wait with no byte from the server before it fails (default 60; 0: forever). */
  timeout?: number;
  /** Seconds to connect and finish the handshake (default 30). */
  connectTimeout?: number;
  /** Connections to use when the server allows several (it advertises multi-conn); default 1. */
  connections?: number;
  /**
   * Seconds to keep reconnecting after a lost connection, requests waiting meanwhile, before they
   * fail (QEMU's reconnect-delay; default 0: fail at once).
   */
  reconnectDelay?: number;
  /** A directory with ca-cert.pem (client-cert.pem, client-key.pem): overrides the URI's tls-certificates. */
  tlsCreds?: string;
}

export interface CheckedClientOptions {
  timeoutMs: number;
  connectTimeoutMs: number;
  connections: number;
  reconnectDelayMs: number;
  tlsCreds: string | undefined;
}

function seconds(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback * 1000;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new VdiskError('EINVAL', `Invalid NBD ${name}: ${String(value)} (a number of seconds, 0 or more)`);
  }
  return value * 1000;
}

export function checkClientOptions(options: NbdClientOptions = {}): CheckedClientOptions {
  if (typeof options !== 'object' || options === null)
    throw new VdiskError('EINVAL', 'The NBD options must be an object');
  const connections = options.connections ?? 1;
  if (!Number.isInteger(connections) || connections < 1 || connections > 16) {
    throw new VdiskError('EINVAL', `Invalid NBD connections: ${String(connections)} (1 to 16)`);
  }
  if (options.tlsCreds !== undefined && (typeof options.tlsCreds !== 'string' || options.tlsCreds === '')) {
    throw new VdiskError('EINVAL', 'tlsCreds must be a directory name');
  }
  const connectTimeoutMs = seconds(options.connectTimeout, 'connect timeout', 30);
  if (connectTimeoutMs === 0) throw new VdiskError('EINVAL', 'Invalid NBD connect timeout: 0');
  return {
    timeoutMs: seconds(options.timeout, 'timeout', 60),
    connectTimeoutMs,
    connections,
    reconnectDelayMs: seconds(options.reconnectDelay, 'reconnect delay', 0),
    tlsCreds: options.tlsCreds,
  };
}
