/**
 * `resize`: a new virtual size, absolute or relative (+SIZE, -SIZE), as qemu-img resize takes
 * it. Shrinking must be asked for explicitly; growth is preallocated as asked.
 */
import { VdiskError } from '../block/errors.js';
import type { Preallocation } from '../block/preallocation.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { fileName, optionsObject } from './arguments.js';
import { parseSize } from './size.js';

export interface ResizeOptions {
  format?: FormatName | 'probe';
  /** "10G", "+1G", "-512M", or bytes. */
  size: string | number | bigint;
  preallocation?: Preallocation;
  shrink?: boolean;
}

/** Resizes an image; returns the new size in bytes. */
export async function resizeImage(filename: string, resizeOptions: ResizeOptions): Promise<number> {
  fileName(filename, 'image file name');
  const options = optionsObject(resizeOptions, 'resize options');
  if (options.size === undefined) throw new VdiskError('EINVAL', 'The new size is missing');
  const { backend } = await openImageWithFormat(filename, { format: options.format ?? 'probe' });
  try {
    const text = typeof options.size === 'string' ? options.size : undefined;
    const relative = text?.startsWith('+') || text?.startsWith('-') ? text[0] : undefined;
    const amount = parseSize(relative ? text!.slice(1) : options.size);
    const current = backend.length;
    const size = relative === '+' ? current + amount : relative === '-' ? current - amount : amount;
    if (size < 0) throw new VdiskError('EINVAL', 'New image size must be positive');
    if (size < current && !options.shrink) {
      throw new VdiskError('EINVAL', 'Use the --shrink option to perform a shrink operation.');
    }
    await backend.truncate(size, options.preallocation ?? 'off');
    return size;
  } finally {
    await backend.close();
  }
}
