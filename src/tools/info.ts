/**
 * `info`: what qemu-img info reports about an image, as the same object its --output=json
 * prints, and both of its text layouts.
 */
import type { BlockBackend } from '../block/backend.js';
import { backingPath, chainKey, nextInChain } from '../engine/backing.js';
import { formatDefinition, isFormatName } from '../engine/formats.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { dumpQobject, inQdictOrder, toQemuJson } from './qemu-json.js';
import { formatSize } from './size.js';

/** qemu-img's ImageInfo, with its JSON key names. Keys are in the order qemu-img prints them. */
export interface ImageInfo {
  'virtual-size': number;
  filename: string;
  'cluster-size'?: number;
  format: string;
  /** Bytes the image uses on the host; absent when unknown ("disk size: unavailable"). */
  'actual-size'?: number;
  'format-specific'?: { type: string; data: Record<string, unknown> };
  'dirty-flag': boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
}

export interface ImageInfoOptions {
  /** The format; default: probed from the image's first bytes, as qemu-img does without -f. */
  format?: FormatName | 'probe';
  /** Read an image another process holds writable (qemu-img's -U). */
  forceShare?: boolean;
}

/** The info of an image already open. `filename` is shown as given. */
export async function backendInfo(backend: BlockBackend, filename: string, format: string): Promise<ImageInfo> {
  const d = backend.describe();
  const backing = d.backingChain[0];
  // Built in QAPI's field order (it decides the order of keys that share a QDict bucket).
  const info: Record<string, unknown> = {
    filename,
    format,
    'dirty-flag': d.dirty,
    'actual-size': await backend.allocatedSize(),
    'virtual-size': d.virtualSize,
    'cluster-size': d.clusterSize,
    'backing-filename': backing?.name,
    'full-backing-filename': backing === undefined ? undefined : backingPath(filename, backing.name),
    'backing-filename-format': backing?.format,
    'format-specific': d.formatSpecific,
  };
  return inQdictOrder(info) as unknown as ImageInfo;
}

/** Opens an image read-only and reports on it, as qemu-img info does. */
export async function imageInfo(filename: string, options: ImageInfoOptions = {}): Promise<ImageInfo> {
  const wanted = options.format ?? 'probe';
  if (wanted !== 'probe') formatDefinition(wanted); // an unknown format fails before the file is opened
  const { backend, format } = await openImageWithFormat(filename, {
    format: wanted,
    readOnly: true,
    forceShare: options.forceShare,
    // info reports on one image; a missing backing file is shown, not an error.
    backing: false,
  });
  try {
    return await backendInfo(backend, filename, format);
  } finally {
    await backend.close();
  }
}

/** qemu-img info --backing-chain: the image, then each backing image down the chain (by the open policy). */
export async function imageChainInfo(filename: string, options: ImageInfoOptions = {}): Promise<ImageInfo[]> {
  const chain: ImageInfo[] = [];
  const keys: string[] = [];
  let next: { file: string; format: FormatName | 'probe' } | undefined = {
    file: filename,
    format: options.format ?? 'probe',
  };
  while (next) {
    keys.push(await chainKey(next.file));
    const info = await imageInfo(next.file, { ...options, format: next.format });
    chain.push(info);
    const backing = info['backing-filename'];
    if (backing === undefined) break;
    const format = info['backing-filename-format'];
    next = {
      file: await nextInChain(next.file, backing, keys),
      format: isFormatName(format) ? format : 'probe',
    };
  }
  return chain;
}

/** qemu-img info --output=json --backing-chain: a JSON array of the images' info. */
export function formatChainJson(chain: readonly ImageInfo[]): string {
  return `${toQemuJson(chain)}\n`;
}

/** qemu-img info --output=json, byte for byte (with the final newline). */
export function formatInfoJson(info: ImageInfo): string {
  return `${toQemuJson(info)}\n`;
}

/** qemu-img info's human output (bdrv_image_info_dump). */
export function formatInfoHuman(info: ImageInfo): string {
  const actual = info['actual-size'];
  let text =
    `image: ${info.filename}\n` +
    `file format: ${info.format}\n` +
    `virtual size: ${formatSize(info['virtual-size'])} (${info['virtual-size']} bytes)\n` +
    `disk size: ${actual === undefined ? 'unavailable' : formatSize(actual)}\n`;
  if (info['cluster-size'] !== undefined) text += `cluster_size: ${info['cluster-size']}\n`;
  if (info['dirty-flag']) text += 'cleanly shut down: no\n';
  const backing = info['backing-filename'];
  if (backing !== undefined) {
    const full = info['full-backing-filename'];
    text += `backing file: ${backing}`;
    if (full === undefined) text += ' (cannot determine actual path)';
    else if (full !== backing) text += ` (actual path: ${full})`;
    text += '\n';
    if (info['backing-filename-format'] !== undefined)
      text += `backing file format: ${info['backing-filename-format']}\n`;
  }
  const specific = info['format-specific'];
  if (specific) text += `Format specific information:\n${dumpQobject(specific.data, 1)}`;
  return text;
}
