/**
 * Where a backing file name found inside an image leads, by the one policy every open follows:
 * relative to the image that names it (as QEMU joins them), never a `json:` pseudo-name, at most
 * MAX_BACKING_DEPTH images deep, never back to an image already in the chain. A backing name may
 * be an NBD URI (a local overlay on a remote base); where backing files are confined to a
 * directory, a URI is refused unless it is one of the URIs explicitly allowed.
 */
import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { VdiskError } from '../block/errors.js';
import { isNbdUri, parseNbdUri } from '../remote/nbd/uri.js';

/** A backing chain deeper than this is refused (it is almost surely a loop or an attack). */
export const MAX_BACKING_DEPTH = 32;

/**
 * The path a backing name stands for, as QEMU joins it to the image that names it; undefined for
 * a relative name inside an image opened by URI (an export has no directory to be relative to).
 */
export function backingPath(parent: string, name: string): string | undefined {
  if (isNbdUri(name) || isAbsolute(name)) return name;
  return isNbdUri(parent) ? undefined : join(dirname(parent), name);
}

/** The key of an image for loop detection: the real path, or the URI as QEMU normalises it. */
export async function chainKey(path: string): Promise<string> {
  if (isNbdUri(path)) return uriKey(path);
  return realpath(path).catch(() => resolve(path));
}

function uriKey(uri: string): string {
  try {
    return parseNbdUri(uri).displayName;
  } catch {
    return uri;
  }
}

export interface BackingConfinement {
  /** Backing files must lie inside this directory (symbolic links resolved). */
  confineTo?: string;
  /** NBD URIs a confined chain may still name (compared as QEMU normalises them). */
  allowUris?: readonly string[];
}

/**
 * Checks that `parent` (whose chain above it, itself included, is `chain`, as real paths) may
 * open its backing file `name`; returns the path to open.
 */
export async function nextInChain(
  parent: string,
  name: string,
  chain: readonly string[],
  confinement: BackingConfinement = {},
): Promise<string> {
  const { confineTo } = confinement;
  if (name.startsWith('json:')) {
    throw new VdiskError(
      'ENOTSUP',
      `Backing file name '${name.slice(0, 64)}' of '${parent}' is a json: name, which vdisk refuses`,
    );
  }
  if (chain.length >= MAX_BACKING_DEPTH) {
    throw new VdiskError('ECORRUPT', `The backing chain of '${parent}' is deeper than ${MAX_BACKING_DEPTH} images`);
  }
  if (isNbdUri(name)) {
    const key = parseNbdUri(name).displayName;
    if (chain.includes(key)) {
      throw new VdiskError('ECORRUPT', `Backing file '${name}' of '${parent}' creates an infinite loop`);
    }
    if (confineTo !== undefined && !(confinement.allowUris ?? []).some((allowed) => uriKey(allowed) === key)) {
      throw new VdiskError(
        'EACCES',
        `Backing file '${name}' of '${parent}' is a network export, refused where backing files are confined to '${confineTo}'`,
      );
    }
    return name;
  }
  const path = backingPath(parent, name);
  if (path === undefined) {
    throw new VdiskError(
      'ENOTSUP',
      `Backing file name '${name}' of '${parent}' is relative, and an NBD export has no directory to resolve it in`,
    );
  }
  const key = await chainKey(path);
  if (chain.includes(key)) {
    throw new VdiskError('ECORRUPT', `Backing file '${name}' of '${parent}' creates an infinite loop`);
  }
  if (confineTo !== undefined) {
    const root = await chainKey(confineTo);
    if (key !== root && !key.startsWith(root.endsWith(sep) ? root : root + sep)) {
      throw new VdiskError(
        'EACCES',
        `Backing file '${name}' of '${parent}' lies outside '${confineTo}', where backing files are confined`,
      );
    }
  }
  return path;
}
