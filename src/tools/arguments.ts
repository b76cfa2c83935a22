/**
 * Checks of what callers of the public functions pass, so a mistake is a VdiskError (EINVAL)
 * with a message that names it, never a TypeError from deep inside.
 */
import { VdiskError } from '../block/errors.js';

/** `value` as an options object (undefined is an empty one). */
export function optionsObject<T extends object>(value: T | undefined, what: string): T {
  if (value === undefined) return {} as T;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new VdiskError('EINVAL', `The ${what} must be an object`);
  }
  return value;
}

/** `value` as a non-empty file name. */
export function fileName(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '')
    throw new VdiskError('EINVAL', `The ${what} must be a non-empty string`);
  return value;
}
