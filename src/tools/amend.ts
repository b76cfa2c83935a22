/**
 * `amend`: changes options of an existing image (qemu-img amend) through its format's amend
 * hook, on the host file opened read-write and locked. Options are checked against the hook's
 * list before anything is written.
 */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { openImageFile } from '../engine/open.js';
import type { FormatAmender, FormatName } from '../format/format.js';
import { fileName, optionsObject } from './arguments.js';
import { formatOptionHelp, joinOptionLists, resolveOptions, splitOptionList } from './options.js';

export interface AmendOptions {
  format?: FormatName | 'probe';
  /** -o: the options to change ("compat=0.10,lazy_refcounts=off"), one list or several. */
  options: string | readonly string[];
  /** --force: allow changes that may lose data. */
  force?: boolean;
  onProgress?: (done: number, total: number) => void;
}

function amenderOf(format: string): FormatAmender {
  const amender = formatDefinition(format).amend;
  if (!amender) throw new VdiskError('ENOTSUP', `Format driver '${format}' does not support option amendment`);
  return amender;
}

/** The text of `amend -o help` for a format. */
export function amendOptionHelp(format: string): string {
  return `Amend options for '${format}':\n${formatOptionHelp(amenderOf(format).options)}`;
}

export async function amendImage(filename: string, amendOptions: AmendOptions): Promise<void> {
  fileName(filename, 'image file name');
  const o = optionsObject(amendOptions, 'amend options');
  const text = joinOptionLists(typeof o.options === 'string' ? [o.options] : [...(o.options ?? [])]);
  if (text === '') throw new VdiskError('EINVAL', 'Must specify options (-o)');
  const { file, format } = await openImageFile(filename, { format: o.format ?? 'probe' });
  try {
    const amender = amenderOf(format);
    for (const { name } of splitOptionList(text)) {
      if (amender.creationOnly.includes(name)) {
        throw new VdiskError('EINVAL', `Invalid parameter '${name}': this option is only supported for image creation`);
      }
    }
    const options: Record<string, string | number | boolean> = {};
    for (const [name, option] of resolveOptions(text, amender.options)) options[name] = option.value;
    await amender.amend(file, { filename, options, force: Boolean(o.force), onProgress: o.onProgress });
  } finally {
    await file.close();
  }
}
