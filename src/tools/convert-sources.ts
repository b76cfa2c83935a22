/**
 * The source side of convert: one image, or several that the target holds one after another
 * (`convert a.img b.img out.img`, as qemu-img concatenates them). Each is opened read-only and
 * its tables are read whole before the target is touched.
 */
import type { BlockBackend } from '../block/backend.js';
import type { CacheModeName } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName, SnapshotRef } from '../format/format.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { onSide } from './convert-side.js';

export interface ConvertSource {
  image: BlockBackend;
  /** Where it starts in the target. */
  at: number;
}

export interface ConvertSources {
  list: ConvertSource[];
  /** The target's size: all of them. */
  length: number;
  close(): Promise<void>;
}

export async function openSources(
  names: readonly string[],
  options: {
    format: FormatName | 'probe';
    cache?: CacheModeName;
    forceShare?: boolean;
    snapshot?: SnapshotRef;
    nbd?: NbdClientOptions;
  },
): Promise<ConvertSources> {
  if (names.length === 0) throw new VdiskError('EINVAL', 'Expecting a source file name');
  const list: ConvertSource[] = [];
  let length = 0;
  const close = async () => {
    for (const { image } of list) await image.close();
  };
  try {
    for (const name of names) {
      const { backend } = await onSide('source', () =>
        openImageWithFormat(name, {
          format: options.format,
          readOnly: true,
          cache: options.cache,
          forceShare: options.forceShare,
          snapshot: options.snapshot,
          nbd: options.nbd,
        }),
      );
      list.push({ image: backend, at: length });
      length += backend.length;
      // A source whose metadata is broken fails here, before the target is created, opened or written.
      await onSide('source', () => walkBlockStatus(backend), 'error while reading');
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { list, length, close };
}

async function walkBlockStatus(source: BlockBackend): Promise<void> {
  for await (const _extent of source.extents(0, source.length));
}
