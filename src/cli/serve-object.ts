/**
 * qemu-nbd's `--object tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off]` and
 * `--tls-creds ID`: the TLS credentials an id names. vdisk takes only tls-creds-x509 objects;
 * a --tls-creds value that names no object is a directory, as vdisk has always taken it.
 */
import { VdiskError } from '../block/errors.js';

export interface TlsChoice {
  dir: string;
  verifyPeer: boolean;
}

interface TlsObject extends TlsChoice {
  endpoint: 'server' | 'client';
}

/** QEMU's key=value list: "a=1,b=2", with ",," for a comma inside a value. */
function keyValues(text: string): Array<[string, string | undefined]> {
  const items: string[] = [''];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ',' && text[i + 1] === ',') {
      items[items.length - 1] += ',';
      i++;
    } else if (text[i] === ',') items.push('');
    else items[items.length - 1] += text[i];
  }
  return items.map((item) => {
    const eq = item.indexOf('=');
    return eq < 0 ? [item, undefined] : [item.slice(0, eq), item.slice(eq + 1)];
  });
}

function onOff(key: string, value: string): boolean {
  if (['on', 'yes', 'true'].includes(value)) return true;
  if (['off', 'no', 'false'].includes(value)) return false;
  throw new VdiskError('EINVAL', `Parameter '${key}' expects 'on' or 'off'`);
}

/** The objects of every --object, by id. */
export function tlsObjects(texts: readonly string[]): Map<string, TlsObject> {
  const objects = new Map<string, TlsObject>();
  for (const text of texts) {
    const pairs = keyValues(text);
    // The first item may be the type without a key, as in qemu-nbd.
    const [first, firstValue] = pairs[0]!;
    const type = firstValue === undefined ? first : pairs.find(([k]) => k === 'qom-type')?.[1];
    if (type === undefined || type === '') throw new VdiskError('EINVAL', "Parameter 'qom-type' is missing");
    if (type !== 'tls-creds-x509')
      throw new VdiskError('EINVAL', `Parameter 'qom-type' does not accept value '${type}'`);
    let id: string | undefined;
    let dir: string | undefined;
    let endpoint = 'client';
    let verifyPeer = true;
    for (const [key, value] of firstValue === undefined ? pairs.slice(1) : pairs) {
      if (key === 'qom-type') continue;
      if (value === undefined) throw new VdiskError('EINVAL', `Expected '=' after parameter '${key}'`);
      if (key === 'id') id = value;
      else if (key === 'dir') dir = value;
      else if (key === 'endpoint') endpoint = value;
      else if (key === 'verify-peer') verifyPeer = onOff(key, value);
      else throw new VdiskError('EINVAL', `Property 'tls-creds-x509.${key}' not found`);
    }
    if (id === undefined) throw new VdiskError('EINVAL', "Parameter 'id' is missing");
    if (objects.has(id)) throw new VdiskError('EINVAL', `attempt to add duplicate property '${id}' to object`);
    if (endpoint !== 'server' && endpoint !== 'client') {
      throw new VdiskError('EINVAL', `Parameter 'endpoint' does not accept value '${endpoint}'`);
    }
    if (dir === undefined) throw new VdiskError('EINVAL', 'Unable to access credentials: no dir given');
    objects.set(id, { dir, verifyPeer, endpoint });
  }
  return objects;
}

/**
 * What --tls-creds names: an object's id, or (vdisk's shorthand, when no --object is given) a
 * directory, with --tls-verify-peer.
 */
export function tlsChoice(
  creds: string | undefined,
  objects: Map<string, TlsObject>,
  verifyPeer: boolean,
): TlsChoice | undefined {
  if (creds === undefined) return undefined;
  const object = objects.get(creds);
  if (!object) {
    if (objects.size > 0)
      throw new VdiskError('EINVAL', `Failed to get TLS creds: No TLS credentials with id '${creds}'`);
    return { dir: creds, verifyPeer };
  }
  if (object.endpoint !== 'server') throw new VdiskError('EINVAL', 'Expecting TLS credentials with a server endpoint');
  return { dir: object.dir, verifyPeer: object.verifyPeer };
}
