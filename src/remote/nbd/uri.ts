/**
 * NBD URIs as QEMU and libnbd read them: `nbd://host[:port]/export`,
 * `nbd+unix:///export?socket=PATH`, and with TLS `nbds://…` and `nbds+unix://…`. The export
 * name is the path without its first `/`, percent-decoded. Query values are percent-decoded
 * without turning `+` into a space (RFC 3986, as QEMU's parser), so socket paths keep their `+`.
 */
import { VdiskError } from '../../block/errors.js';

export const DEFAULT_NBD_PORT = 10809;

export interface NbdUri {
  transport: 'tcp' | 'unix';
  /** TCP only. */
  host?: string;
  port?: number;
  /** Unix only: the socket's path. */
  socket?: string;
  exportName: string;
  /** nbds: STARTTLS is required. */
  tls: boolean;
  /** A directory with ca-cert.pem (and client-cert.pem, client-key.pem): libnbd's query key. */
  tlsCertificates?: string;
  /** Check the server's certificate (default true). */
  tlsVerifyPeer: boolean;
  /** The name QEMU gives the export in info and map: nbd://127.0.0.1:10809/name, nbd+unix://?socket=… */
  displayName: string;
}

const SCHEME = /^(nbds?)(\+tcp|\+unix)?:\/\//i;

/** True for a name that is an NBD URI (anything else is a file name). */
export function isNbdUri(name: string): boolean {
  return SCHEME.test(name);
}

function bad(uri: string, why: string): VdiskError {
  return new VdiskError('EINVAL', `Invalid NBD URI '${uri}': ${why}`);
}

function decode(uri: string, text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw bad(uri, `bad percent-encoding in the ${what}`);
  }
}

function parseQuery(uri: string, query: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decode(uri, eq < 0 ? part : part.slice(0, eq), 'query');
    const value = decode(uri, eq < 0 ? '' : part.slice(eq + 1), 'query');
    if (params.has(key)) throw bad(uri, `'${key}' is given twice`);
    params.set(key, value);
  }
  return params;
}

function parseBoolean(uri: string, key: string, value: string): boolean {
  if (/^(1|true|on|yes)$/i.test(value)) return true;
  if (/^(0|false|off|no)$/i.test(value)) return false;
  throw bad(uri, `${key}=${value} is not a boolean`);
}

/** Splits an authority (`[user@]host[:port]`) into host and port. */
function parseAuthority(uri: string, authority: string): { host: string; port: number | undefined } {
  const at = authority.lastIndexOf('@');
  const hostPort = at >= 0 ? authority.slice(at + 1) : authority;
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]*)(?::(\d*))?$/.exec(hostPort);
  if (!m) throw bad(uri, `bad host '${hostPort}'`);
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : decode(uri, m[1]!, 'host');
  if (m[2] === undefined || m[2] === '') return { host, port: undefined };
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(uri, `bad port ${m[2]}`);
  return { host, port };
}

/** Parses an NBD URI; a VdiskError (EINVAL) names what is wrong with it. */
export function parseNbdUri(uri: string): NbdUri {
  const scheme = SCHEME.exec(uri);
  if (!scheme) throw bad(uri, 'the scheme must be nbd, nbd+unix, nbds or nbds+unix');
  const tls = scheme[1]!.toLowerCase() === 'nbds';
  const transport = scheme[2]?.toLowerCase() === '+unix' ? 'unix' : 'tcp';
  let rest = uri.slice(scheme[0].length);
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  const query = parseQuery(uri, q >= 0 ? rest.slice(q + 1) : '');
  if (q >= 0) rest = rest.slice(0, q);
  const slash = rest.indexOf('/');
  const authority = slash >= 0 ? rest.slice(0, slash) : rest;
  const path = slash >= 0 ? rest.slice(slash) : '';
  const exportName = decode(uri, path.slice(1), 'export name');
  if (Buffer.byteLength(exportName) > 4096) throw bad(uri, 'the export name is longer than 4096 bytes');

  const socket = query.get('socket');
  const tlsCertificates = query.get('tls-certificates');
  const verify = query.get('tls-verify-peer');
  for (const key of query.keys()) {
    if (key !== 'socket' && key !== 'tls-certificates' && key !== 'tls-verify-peer') {
      throw bad(uri, `unsupported query parameter '${key}'`);
    }
  }
  if (!tls && (tlsCertificates !== undefined || verify !== undefined)) {
    throw bad(uri, 'TLS parameters need the nbds scheme');
  }
  const tlsVerifyPeer = verify === undefined ? true : parseBoolean(uri, 'tls-verify-peer', verify);
  const common = {
    exportName,
    tls,
    tlsVerifyPeer,
    ...(tlsCertificates !== undefined ? { tlsCertificates } : {}),
  };
  const exportPart = exportName === '' ? '' : `/${exportName}`;
  const scheme0 = tls ? 'nbds' : 'nbd';

  if (transport === 'unix') {
    const { host } = parseAuthority(uri, authority);
    if (host !== '') throw bad(uri, 'a Unix socket URI has no host');
    if (socket === undefined || socket === '') throw bad(uri, 'a Unix socket URI needs ?socket=PATH');
    return {
      transport,
      socket,
      ...common,
      displayName: `${scheme0}+unix://${exportPart}?socket=${socket}`,
    };
  }
  if (socket !== undefined) throw bad(uri, 'socket= is for nbd+unix URIs');
  const { host, port } = parseAuthority(uri, authority);
  if (host === '') throw bad(uri, 'no host');
  const p = port ?? DEFAULT_NBD_PORT;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return { transport, host, port: p, ...common, displayName: `${scheme0}://${shownHost}:${p}${exportPart}` };
}
