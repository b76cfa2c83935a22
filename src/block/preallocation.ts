import { VdiskError } from './errors.js';

/** QEMU's preallocation modes, for new images and for growth. */
export const PREALLOCATIONS = ['off', 'metadata', 'falloc', 'full'] as const;
export type Preallocation = (typeof PREALLOCATIONS)[number];

export function parsePreallocation(text: string): Preallocation {
  if ((PREALLOCATIONS as readonly string[]).includes(text)) return text as Preallocation;
  throw new VdiskError('EINVAL', `Invalid parameter '${text}' for preallocation (use off, metadata, falloc or full)`);
}
