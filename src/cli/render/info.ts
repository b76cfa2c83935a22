/** qemu-img info's two layouts: the JSON of --output=json, key for key, and the human text. */
import type { ImageInfo } from '../../tools/info.js';
import { formatSize } from '../../tools/size.js';
import { dumpQobject, inQdictOrder, toQemuJson } from './qemu-json.js';
import { formatSnapshotList, qemuSnapshotInfo } from './snapshots.js';

/** The ImageInfo object qemu-img builds, with its key names, in the order it prints them. */
export function qemuImageInfo(info: ImageInfo): Record<string, unknown> {
  // Built in QAPI's field order (it decides the order of keys that share a QDict bucket).
  return inQdictOrder({
    filename: info.filename,
    format: info.format,
    'dirty-flag': info.dirty,
    'actual-size': info.actualSize,
    'virtual-size': info.virtualSize,
    'cluster-size': info.clusterSize,
    'backing-filename': info.backingFilename,
    'full-backing-filename': info.fullBackingFilename,
    'backing-filename-format': info.backingFormat,
    snapshots: info.snapshots.length > 0 ? info.snapshots.map(qemuSnapshotInfo) : undefined,
    'format-specific': info.formatSpecific,
  });
}

/** qemu-img info --output=json, byte for byte (with the final newline). */
export function formatInfoJson(info: ImageInfo): string {
  return `${toQemuJson(qemuImageInfo(info))}\n`;
}

/** qemu-img info --output=json --backing-chain: a JSON array of the images' info. */
export function formatChainJson(chain: readonly ImageInfo[]): string {
  return `${toQemuJson(chain.map(qemuImageInfo))}\n`;
}

/** qemu-img info's human output (bdrv_image_info_dump). */
export function formatInfoHuman(info: ImageInfo): string {
  const actual = info.actualSize;
  let text =
    `image: ${info.filename}\n` +
    `file format: ${info.format}\n` +
    `virtual size: ${formatSize(info.virtualSize)} (${info.virtualSize} bytes)\n` +
    `disk size: ${actual === undefined ? 'unavailable' : formatSize(actual)}\n`;
  if (info.clusterSize !== undefined) text += `cluster_size: ${info.clusterSize}\n`;
  if (info.dirty) text += 'cleanly shut down: no\n';
  const backing = info.backingFilename;
  if (backing !== undefined) {
    const full = info.fullBackingFilename;
    text += `backing file: ${backing}`;
    if (full === undefined) text += ' (cannot determine actual path)';
    else if (full !== backing) text += ` (actual path: ${full})`;
    text += '\n';
    if (info.backingFormat !== undefined) text += `backing file format: ${info.backingFormat}\n`;
  }
  if (info.snapshots.length > 0) text += formatSnapshotList(info.snapshots);
  const specific = info.formatSpecific;
  if (specific) text += `Format specific information:\n${dumpQobject(specific.data, 1)}`;
  return text;
}
