/**
 * `info`: what an image is (format, sizes, dirty bit, backing file, snapshots, format-specific
 * facts), as qemu-img info reports it. The QEMU JSON and text layouts are the CLI's
 * (src/cli/render/info.ts).
 */
import type { SnapshotInfo } from '../block/driver.js';
import { backingPath, chainKey, nextInChain } from '../engine/backing.js';
import { isFormatName } from '../engine/formats.js';
import type { FormatName } from '../format/format.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { isNbdUri } from '../remote/nbd/uri.js';
import { type ImageSource, withImage } from './image-source.js';

export interface ImageInfo {
  /** The image's name, as given. */
  filename: string;
  format: FormatName;
  virtualSize: number;
  /** Bytes the image uses on the host; absent when the host does not say. */
  actualSize?: number;
  /** The unit of allocation (qcow2's cluster size); absent for raw. */
  clusterSize?: number;
  /** Not closed cleanly with lazy refcounts; absent where the image cannot say (raw over NBD, as in qemu-img). */
  dirty?: boolean;
  /** The backing file name as the image stores it. */
  backingFilename?: string;
  /** The backing file's path, resolved against the image's directory. */
  fullBackingFilename?: string;
  backingFormat?: string;
  snapshots: SnapshotInfo[];
  /** Facts only this format has, with QEMU's key names. */
  formatSpecific?: { type: string; data: Record<string, unknown> };
}

export interface ImageInfoOptions {
  /** The format; default: probed from the image's first bytes, as qemu-img does without -f. */
  format?: FormatName | 'probe';
  /** Read an image another process holds writable (qemu-img's -U). */
  forceShare?: boolean;
  /** Settings for the NBD client, for every NBD URI the call opens. */
  nbd?: NbdClientOptions;
}

/** Reports on an image: a path (opened read-only, its backing chain left closed) or an open image. */
export async function imageInfo(image: ImageSource, options: ImageInfoOptions = {}): Promise<ImageInfo> {
  return withImage(
    image,
    { format: options.format, readOnly: true, forceShare: options.forceShare, backing: false, nbd: options.nbd },
    async (backend, filename, format) => {
      const d = backend.describe();
      const backing = d.backingChain[0];
      return {
        filename,
        format,
        virtualSize: d.virtualSize,
        actualSize: await backend.allocatedSize(),
        clusterSize: d.clusterSize,
        // QEMU's raw driver asks its protocol node, and its NBD client has no answer.
        ...(format === 'raw' && isNbdUri(filename) ? {} : { dirty: d.dirty }),
        backingFilename: backing?.name,
        fullBackingFilename: backing === undefined ? undefined : backingPath(filename, backing.name),
        backingFormat: backing?.format,
        snapshots: d.snapshots,
        formatSpecific: d.formatSpecific,
      };
    },
  );
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
    if (info.backingFilename === undefined) break;
    next = {
      file: await nextInChain(next.file, info.backingFilename, keys),
      format: isFormatName(info.backingFormat) ? info.backingFormat : 'probe',
    };
  }
  return chain;
}
