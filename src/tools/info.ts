/**
 * `info`: what qemu-img info reports about an image, as the same object its --output=json
 * prints, and both of its text layouts.
 */
import type { BlockBackend } from '../block/backend.js';
import type { BlockDriver } from '../block/driver.js';
import { openImageWithFormat } from '../block/open.js';
import { type FormatName, formatDefinition } from '../format/registry.js';
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
}

/**
 * Facts a format driver may add for info. Not part of BlockDriver yet: a driver that has these
 * members (qcow2: cluster size, dirty bit) gets them shown; others show what raw shows.
 */
interface InfoFacts {
  clusterSize?: number;
  dirty?: boolean;
}

export interface ImageInfoOptions {
  /** The format; default: probed from the image's first bytes, as qemu-img does without -f. */
  format?: FormatName | 'probe';
  /** Take the shared image lock (default true); false is qemu-img's -U (force share). */
  lock?: boolean;
}

function formatSpecific(root: BlockDriver): ImageInfo['format-specific'] {
  const specific = root.formatSpecific?.();
  if (!specific) return undefined;
  // Either the ImageInfoSpecific union itself ({type, data}) or just its data.
  if (typeof specific.type === 'string' && specific.data && typeof specific.data === 'object') {
    return { type: specific.type, data: specific.data as Record<string, unknown> };
  }
  return { type: root.driverName, data: specific };
}

/** The info of an image already open. `filename` is shown as given. */
export async function backendInfo(backend: BlockBackend, filename: string, format: string): Promise<ImageInfo> {
  const root = backend.root;
  const facts = root as BlockDriver & InfoFacts;
  const actual = await root.allocatedSize?.();
  const info: ImageInfo = {
    'virtual-size': backend.length,
    filename,
    'cluster-size': typeof facts.clusterSize === 'number' && facts.clusterSize > 0 ? facts.clusterSize : undefined,
    format,
    'actual-size': actual,
    'format-specific': formatSpecific(root),
    'dirty-flag': Boolean(facts.dirty),
  };
  return inQdictOrder(info);
}

/** Opens an image read-only and reports on it, as qemu-img info does. */
export async function imageInfo(filename: string, options: ImageInfoOptions = {}): Promise<ImageInfo> {
  const wanted = options.format ?? 'probe';
  if (wanted !== 'probe') formatDefinition(wanted); // an unknown format fails before the file is opened
  const { backend, format } = await openImageWithFormat(filename, {
    format: wanted,
    readOnly: true,
    lock: options.lock ?? true,
  });
  try {
    return await backendInfo(backend, filename, format);
  } finally {
    await backend.close();
  }
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
  const specific = info['format-specific'];
  if (specific) text += `Format specific information:\n${dumpQobject(specific.data, 1)}`;
  return text;
}
