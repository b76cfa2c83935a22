/** The -f option of the image commands: a format vdisk knows, or probing when it is absent. */
import { formatDefinition } from '../engine/formats.js';
import type { FormatName } from '../format/format.js';

export function formatOption(value: unknown): FormatName | 'probe' {
  return value === undefined ? 'probe' : formatDefinition(value as string).name;
}
