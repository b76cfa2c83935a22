/**
 * `bitmap`: qemu-img bitmap's operations on one persistent dirty bitmap of an image (add,
 * remove, clear, enable, disable, merge), run in the order given and stored when the image is
 * closed. The format's own bitmaps do the work; an image whose format has none is refused.
 */
import type { BlockBackend } from '../block/backend.js';
import type { PersistentBitmaps } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { fileName, optionsObject } from './arguments.js';

export type BitmapAction =
  | { op: 'add' | 'remove' | 'clear' | 'enable' | 'disable' }
  /** Sets the bits of `source`: a bitmap of the same image, or of `sourceFile` when given. */
  | { op: 'merge'; source: string; sourceFile?: string; sourceFormat?: FormatName | 'probe' };

export interface BitmapOptions {
  format?: FormatName | 'probe';
  actions: BitmapAction[];
  /** Bytes per bit of a bitmap --add makes (default: the cluster size, within 4 KiB..64 KiB). */
  granularity?: number;
}

/** The persistent bitmaps of an open image, or the error qemu-img gives for a format without them. */
export function bitmapsOf(backend: BlockBackend, filename: string): PersistentBitmaps {
  const bitmaps = backend.persistentBitmaps();
  if (!bitmaps) {
    throw new VdiskError('ENOTSUP', `Can't store persistent bitmaps to ${filename}: Operation not supported`);
  }
  return bitmaps;
}

/** Runs the actions on bitmap `name` of the image, in order. */
export async function changeBitmap(filename: string, name: string, bitmapOptions: BitmapOptions): Promise<void> {
  fileName(filename, 'image file name');
  if (typeof name !== 'string') throw new VdiskError('EINVAL', 'The bitmap name must be a string');
  const options = optionsObject(bitmapOptions, 'bitmap options');
  const actions = options.actions ?? [];
  if (actions.length === 0) {
    throw new VdiskError('EINVAL', 'Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  }
  if (options.granularity !== undefined && !actions.some((a) => a.op === 'add')) {
    throw new VdiskError('EINVAL', 'granularity only supported with --add');
  }
  // Source images are opened first, as qemu-img does: a missing one fails before any change.
  const sources = new Map<BitmapAction, BlockBackend>();
  try {
    for (const action of actions) {
      if (action.op !== 'merge' || action.sourceFile === undefined) continue;
      const opened = await openImageWithFormat(action.sourceFile, {
        format: action.sourceFormat ?? 'probe',
        readOnly: true,
      });
      sources.set(action, opened.backend);
    }
    const { backend } = await openImageWithFormat(filename, { format: options.format ?? 'probe' });
    try {
      for (const action of actions) {
        try {
          await perform(backend, filename, name, action, options.granularity, sources.get(action));
        } catch (err) {
          if (!(err instanceof VdiskError)) throw err;
          throw new VdiskError(err.code, `Operation ${action.op} on bitmap ${name} failed: ${err.message}`);
        }
      }
    } finally {
      await backend.close();
    }
  } finally {
    for (const source of sources.values()) await source.close();
  }
}

async function perform(
  backend: BlockBackend,
  filename: string,
  name: string,
  action: BitmapAction,
  granularity: number | undefined,
  source: BlockBackend | undefined,
): Promise<void> {
  const bitmaps = bitmapsOf(backend, filename);
  switch (action.op) {
    case 'add': {
      const cluster = backend.describe().clusterSize ?? 65536;
      await bitmaps.add(name, granularity ?? Math.min(65536, Math.max(4096, cluster)), true);
      return;
    }
    case 'remove':
      return bitmaps.remove(name);
    case 'clear':
      return bitmaps.clear(name);
    case 'enable':
    case 'disable':
      return bitmaps.setEnabled(name, action.op === 'enable');
    case 'merge': {
      // Without a source file the source bitmap is one of the image's own.
      const from = source ? source.persistentBitmaps() : bitmaps;
      if (!from) throw new VdiskError('ENOENT', `Dirty bitmap '${action.source}' not found`);
      return bitmaps.merge(name, from.get(action.source));
    }
  }
}
