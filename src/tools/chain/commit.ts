/**
 * `commit`: the data an overlay holds goes down into its backing file (or a base further down
 * the chain), then the overlay is emptied so that it reads through again, as qemu-img commit
 * does. The base is written and flushed before the overlay loses anything, so an interruption
 * never changes what the overlay reads: at worst the base holds part of the overlay's data.
 * With a base below the backing file the overlay is kept as it is (-b implies -d, as in QEMU):
 * the images between them no longer match what they meant.
 */
import type { BlockBackend } from '../../block/backend.js';
import type { CacheModeName } from '../../block/cache-mode.js';
import { VdiskError } from '../../block/errors.js';
import { openImageWithFormat } from '../../engine/open.js';
import type { FormatName } from '../../format/format.js';
import { fileName, optionsObject } from '../arguments.js';
import { backingLayers, depthOf } from './backing-layers.js';

export interface CommitOptions {
  format?: FormatName | 'probe';
  /** -t: the cache mode of the overlay and the base (default writeback). */
  cache?: CacheModeName;
  /** -b: the image of the chain to commit into (default: the backing file). */
  base?: string;
  /** -d: leave the overlay as it is instead of emptying it. */
  drop?: boolean;
  onProgress?: (done: number, total: number) => void;
}

const CHUNK = 1024 * 1024;

export async function commitImage(filename: string, commitOptions: CommitOptions = {}): Promise<void> {
  fileName(filename, 'image file name');
  const o = optionsObject(commitOptions, 'commit options');
  const format = o.format ?? 'probe';
  const layers = await backingLayers(filename, format);
  if (layers.length === 0) throw new VdiskError('EINVAL', 'Image does not have a backing file');
  const depth = o.base === undefined ? 1 : await depthOf(filename, layers, o.base);
  const keepTop = Boolean(o.drop) || o.base !== undefined;
  const opened = await openImageWithFormat(filename, {
    format,
    cache: o.cache,
    readOnly: keepTop,
    writableBacking: depth,
  });
  const top = opened.backend;
  try {
    await commitInto(top, opened.writableBacking!, depth, { keepTop, onProgress: o.onProgress });
  } finally {
    await top.close();
  }
}

/**
 * The commit itself, on open images: `base` is the layer `depth` below `top`, writable. The base
 * grows to the overlay's size, takes the data and is flushed; then (unless keepTop) the overlay
 * is emptied and flushed.
 */
export async function commitInto(
  top: BlockBackend,
  base: BlockBackend,
  depth: number,
  o: { keepTop: boolean; onProgress?: CommitOptions['onProgress'] },
): Promise<void> {
  if (base.length < top.length) await base.truncate(top.length);
  await copyDown(top, base, depth, o.onProgress);
  await base.flush();
  if (!o.keepTop) {
    await top.makeEmpty();
    await top.flush();
  }
}

/** Copies every range some layer above `depth` decides into `base`. */
async function copyDown(
  top: BlockBackend,
  base: BlockBackend,
  depth: number,
  onProgress: CommitOptions['onProgress'],
): Promise<void> {
  const size = top.length;
  onProgress?.(0, size);
  for await (const extent of top.extents(0, size)) {
    const { offset, length } = extent;
    if (extent.allocated && (extent.depth ?? 0) < depth) {
      if (extent.zero) {
        await base.writeZeroes(offset, length, { mayUnmap: true });
      } else {
        for (let pos = offset; pos < offset + length; pos += CHUNK) {
          const n = Math.min(CHUNK, offset + length - pos);
          await base.write(pos, await top.read(pos, n));
        }
      }
    }
    onProgress?.(offset + length, size);
  }
}
