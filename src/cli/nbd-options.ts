/**
 * The NBD client's settings on the command line, for every command that opens images: they
 * apply to each NBD URI the command opens (the image, its backing chain, a convert's target).
 * QEMU's nbd driver names two of them (`open-timeout`, `reconnect-delay`); the other two have no
 * QEMU name and take nbdcopy's (`--connections`) and a plain one (`--request-timeout`). They are
 * options, not URI query keys: a URI written into a qcow2 image as its backing file must stay one
 * that QEMU, which refuses unknown keys, can open.
 */
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { type OptionSpecs, type ParsedArgs, usageError } from './args.js';

export const NBD_CLIENT_OPTIONS: OptionSpecs = {
  'open-timeout': {
    type: 'string',
    arg: 'SECONDS',
    help: 'NBD URIs: give up connecting (and the handshake) after this long (default 30)',
  },
  'request-timeout': {
    type: 'string',
    arg: 'SECONDS',
    help: 'NBD URIs: fail requests after this long without a byte from the server (default 60; 0: wait forever)',
  },
  'reconnect-delay': {
    type: 'string',
    arg: 'SECONDS',
    help: 'NBD URIs: reconnect after a lost connection and retry for this long (default 0: fail at once)',
  },
  connections: {
    type: 'string',
    arg: 'N',
    help: 'NBD URIs: connections to use when the server allows several (multi-conn; default 1, at most 16)',
  },
};

function seconds(command: string, name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  const n = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isFinite(n)) throw usageError(command, `Invalid --${name} '${text}': a number of seconds`);
  return n;
}

/** The client settings the command line gave; undefined when it gave none. */
export function nbdClientOptions(command: string, values: ParsedArgs['values']): NbdClientOptions | undefined {
  const options: NbdClientOptions = {};
  const connectTimeout = seconds(command, 'open-timeout', values['open-timeout']);
  const timeout = seconds(command, 'request-timeout', values['request-timeout']);
  const reconnectDelay = seconds(command, 'reconnect-delay', values['reconnect-delay']);
  if (connectTimeout !== undefined) {
    if (connectTimeout === 0) throw usageError(command, 'Invalid --open-timeout 0: it must be above 0');
    options.connectTimeout = connectTimeout;
  }
  if (timeout !== undefined) options.timeout = timeout;
  if (reconnectDelay !== undefined) options.reconnectDelay = reconnectDelay;
  if (values.connections !== undefined) {
    const text = String(values.connections);
    const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    if (!(n >= 1 && n <= 16)) throw usageError(command, `Invalid --connections '${text}': 1 to 16`);
    options.connections = n;
  }
  return Object.keys(options).length > 0 ? options : undefined;
}
