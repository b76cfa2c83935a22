/**
 * Where a backing file name found inside an image leads, by the one policy every open follows:
 * relative to the image that names it (as QEMU joins them), never a `json:` pseudo-name, at most
 * MAX_BACKING_DEPTH images deep, never back to an image already in the chain.
 */
import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { VdiskError } from '../block/errors.js';

/** A backing chain deeper than this is refused (it is almost surely a loop or an attack). */
export const MAX_BACKING_DEPTH = 32;

/** The path a backing name stands for, as QEMU joins it to the image that names it. */
export function backingPath(parent: string, name: string): string {
  return isAbsolute(name) ? name : join(dirname(parent), name);
}

/** The real path of an image, for loop detection (the path itself when it cannot be resolved). */
export async function chainKey(path: string): Promise<string> {
  return realpath(path).catch(() => resolve(path));
}

/**
 * Checks that `parent` (whose chain above it, itself included, is `chain`, as real paths) may
 * open its backing file `name`; returns the path to open.
 */
export async function nextInChain(
  parent: string,
  name: string,
  chain: readonly string[],
  /** When set, backing files must lie inside this directory (symbolic links resolved). */
  confineTo?: string,
): Promise<string> {
  if (name.startsWith('json:')) {
    throw new VdiskError(
      'ENOTSUP',
      `Backing file name '${name.slice(0, 64)}' of '${parent}' is a json: name, which vdisk refuses`,
    );
  }
  if (chain.length >= MAX_BACKING_DEPTH) {
    throw new VdiskError('ECORRUPT', `The backing chain of '${parent}' is deeper than ${MAX_BACKING_DEPTH} images`);
  }
  const path = backingPath(parent, name);
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
