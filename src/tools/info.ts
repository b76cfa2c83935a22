/**
 * `info`: what qemu-img info reports about an image, as the same object its --output=json
 * prints, and both of its text layouts.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import type { BlockBackend } from '../block/backend.js';
import type { BlockDriver } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
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
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
}

/**
 * Facts a format driver may add for info. Not part of BlockDriver yet: a driver that has these
 * members (qcow2: cluster size, dirty bit, backing file) gets them shown; others show what raw
 * shows. Each may be a value or a method returning it.
 */
interface InfoFacts {
  clusterSize?: number | (() => number);
  dirty?: boolean | (() => boolean);
  backingName?: string;
  backingFormat?: string;
}

function fact<T>(value: T | (() => T) | undefined, owner: object): T | undefined {
  return typeof value === 'function' ? (value as () => T).call(owner) : value;
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
  const clusterSize = fact(facts.clusterSize, root);
  const backing = typeof facts.backingName === 'string' ? facts.backingName : undefined;
  // Built in QAPI's field order (it decides the order of keys that share a QDict bucket).
  const info: Record<string, unknown> = {
    filename,
    format,
    'dirty-flag': Boolean(fact(facts.dirty, root)),
    'actual-size': await root.allocatedSize?.(),
    'virtual-size': backend.length,
    'cluster-size': typeof clusterSize === 'number' && clusterSize > 0 ? clusterSize : undefined,
    'backing-filename': backing,
    'full-backing-filename':
      backing === undefined || path.isAbsolute(backing) ? backing : path.join(path.dirname(filename), backing),
    'backing-filename-format': backing === undefined ? undefined : facts.backingFormat,
    'format-specific': formatSpecific(root),
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
    lock: options.lock ?? true,
    // info reports on one image; a missing backing file is shown, not an error.
    noBacking: true,
  });
  try {
    return await backendInfo(backend, filename, format);
  } finally {
    await backend.close();
  }
}

/** A backing chain deeper than this is refused, as the open policy refuses it. */
const MAX_CHAIN = 32;

/** qemu-img info --backing-chain: the image, then each backing image down the chain. */
export async function imageChainInfo(filename: string, options: ImageInfoOptions = {}): Promise<ImageInfo[]> {
  const chain: ImageInfo[] = [];
  const seen = new Set<string>();
  let next: { file: string; format: FormatName | 'probe' } | undefined = {
    file: filename,
    format: options.format ?? 'probe',
  };
  while (next) {
    const real = await realpath(next.file).catch(() => path.resolve(next!.file));
    if (seen.has(real)) throw new VdiskError('ECORRUPT', `Backing file '${next.file}' creates an infinite loop`);
    if (chain.length >= MAX_CHAIN)
      throw new VdiskError('ECORRUPT', `The backing chain is deeper than ${MAX_CHAIN} images`);
    seen.add(real);
    const info = await imageInfo(next.file, { ...options, format: next.format });
    chain.push(info);
    const backing = info['full-backing-filename'];
    const backingFormat = info['backing-filename-format'];
    next =
      backing === undefined
        ? undefined
        : { file: backing, format: backingFormat === 'raw' || backingFormat === 'qcow2' ? backingFormat : 'probe' };
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
