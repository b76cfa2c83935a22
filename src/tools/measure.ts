/**
 * `measure`: the size a new image of a format would need (qemu-img measure), for a virtual size
 * or for the content of an existing image converted into it, through the format's measure hook.
 */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName, MeasureResult, MeasureSource } from '../format/format.js';
import { optionsObject } from './arguments.js';
import { joinOptionLists, resolveOptions } from './options.js';
import { parseSize } from './size.js';

export interface MeasureOptions {
  /** --size: a virtual size (without a source image). */
  size?: string | number;
  /** An image whose content the new image would hold. */
  source?: string;
  sourceFormat?: FormatName | 'probe';
  /** -l: an internal snapshot of the source. */
  snapshot?: string;
  /** -U: read a source another process holds. */
  forceShare?: boolean;
  /** -O: the new image's format (default raw). */
  targetFormat?: string;
  /** -o: the new image's creation options. */
  options?: string | readonly string[];
}

export async function measureImage(measureOptions: MeasureOptions): Promise<MeasureResult> {
  const o = optionsObject(measureOptions, 'measure options');
  if (o.size !== undefined && o.source !== undefined) {
    throw new VdiskError('EINVAL', '--size N cannot be used together with a filename.');
  }
  if (o.size === undefined && o.source === undefined) {
    throw new VdiskError('EINVAL', 'Either --size N or one filename must be specified.');
  }
  const format = o.targetFormat ?? 'raw';
  const definition = formatDefinition(format);
  const creator = definition.create;
  if (!definition.measure || !creator) {
    throw new VdiskError('ENOTSUP', `Block driver '${format}' does not support size measurement`);
  }
  const text = joinOptionLists(typeof o.options === 'string' ? [o.options] : [...(o.options ?? [])]);
  const options: Record<string, string | number | boolean> = {};
  // The size comes from --size or the source, whatever -o says (as in qemu-img).
  for (const [name, option] of resolveOptions(text, creator.options)) if (name !== 'size') options[name] = option.value;
  if (o.source === undefined) {
    return definition.measure({ size: parseSize(o.size!), options });
  }
  const { backend, format: sourceFormat } = await openImageWithFormat(o.source, {
    format: o.sourceFormat ?? 'probe',
    readOnly: true,
    forceShare: o.forceShare,
  });
  try {
    const described = backend.describe();
    if (o.snapshot !== undefined) {
      const known = described.snapshots.some((s) => s.id === o.snapshot || s.name === o.snapshot);
      if (!known) throw new VdiskError('ENOENT', "Failed to load snapshot: Can't find snapshot");
      throw new VdiskError('ENOTSUP', 'vdisk cannot measure an internal snapshot');
    }
    const source: MeasureSource = {
      length: backend.length,
      extents: () => backend.extents(0, backend.length),
      bitmaps: described.bitmaps,
      keepsBitmaps: formatDefinition(sourceFormat).persistentBitmaps === true,
    };
    return await definition.measure({ source, options });
  } finally {
    await backend.close();
  }
}
