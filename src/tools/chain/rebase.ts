/**
 * `rebase`: an overlay names another backing file, as qemu-img rebase does. Unsafe mode (-u)
 * only rewrites the name and format. Safe mode first copies into the overlay every range it does
 * not hold itself where the old chain and the new backing file read differently (sector by
 * sector), flushes, and only then switches the header, in one atomic write: at every moment the
 * overlay reads as before. `backing: ''` removes the backing file (everything the old chain
 * provides is copied in). Every check (formats, the new backing file opens, the format can name
 * a backing file) comes before the first write.
 */
import type { BlockBackend } from '../../block/backend.js';
import type { CacheModeName } from '../../block/cache-mode.js';
import { VdiskError } from '../../block/errors.js';
import { backingPath } from '../../engine/backing.js';
import { formatDefinition, isFormatName } from '../../engine/formats.js';
import { openImageFile, openImageWithFormat } from '../../engine/open.js';
import type { FormatName } from '../../format/format.js';
import { fileName, optionsObject } from '../arguments.js';
import { readOrZeros, writeDifferentSectors } from '../differing-sectors.js';

export interface RebaseOptions {
  format?: FormatName | 'probe';
  /** -b: the new backing file, as the overlay will name it; '' removes it. */
  backing: string;
  /** -F: the new backing file's format (needed unless the backing file is removed). */
  backingFormat?: string;
  /** -u: only rewrite the backing fields. */
  unsafe?: boolean;
  /** -t: the cache mode of the overlay (default writeback). */
  cache?: CacheModeName;
  /** -T: the cache mode of the old and new backing files (default writeback). */
  sourceCache?: CacheModeName;
  onProgress?: (done: number, total: number) => void;
}

const CHUNK = 1024 * 1024;

export async function rebaseImage(filename: string, rebaseOptions: RebaseOptions): Promise<void> {
  fileName(filename, 'image file name');
  const o = optionsObject(rebaseOptions, 'rebase options');
  if (typeof o.backing !== 'string') {
    throw new VdiskError('EINVAL', 'Must specify backing file (-b) or use unsafe mode (-u)');
  }
  const removing = o.backing === '';
  const changeTo = (message: string) =>
    new VdiskError('EINVAL', `Could not change the backing file to '${o.backing}': ${message}`);
  if (!removing && o.backingFormat === undefined) throw changeTo('backing format must be specified');
  if (o.backingFormat !== undefined && !isFormatName(o.backingFormat)) {
    throw new VdiskError('EINVAL', `Unknown file format '${o.backingFormat}'`);
  }
  const backing = removing ? undefined : { name: o.backing, format: o.backingFormat };
  const format = o.format ?? 'probe';
  if (!o.unsafe) {
    // The overlay, through its old chain: what it reads now, and where it holds data itself.
    const { backend: top, format: topFormat } = await openImageWithFormat(filename, { format, cache: o.cache });
    try {
      if (!formatDefinition(topFormat).setBacking) throw changeTo('Operation not supported');
      const target = backing && (await openNewBacking(filename, backing, o.sourceCache));
      try {
        await copyDifferences(top, target, o.onProgress);
      } finally {
        await target?.close();
      }
      await top.flush();
    } finally {
      await top.close();
    }
  }
  const { file, format: fileFormat } = await openImageFile(filename, { format });
  try {
    const definition = formatDefinition(fileFormat);
    if (!definition.setBacking) throw changeTo('Operation not supported');
    await definition.setBacking(file, backing);
  } finally {
    await file.close();
  }
}

async function openNewBacking(
  overlay: string,
  backing: { name: string; format?: string },
  cache: CacheModeName | undefined,
): Promise<BlockBackend> {
  const path = backingPath(overlay, backing.name) ?? backing.name;
  try {
    const opened = await openImageWithFormat(path, {
      format: backing.format as FormatName,
      readOnly: true,
      cache,
    });
    return opened.backend;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const code = err instanceof VdiskError ? err.code : 'EIO';
    throw new VdiskError(code, `Could not open new backing file '${backing.name}': ${message}`, { cause: err });
  }
}

/** Copies into `top` what its old chain gives where the new backing file (zeros past its end) differs. */
export async function copyDifferences(
  top: BlockBackend,
  target: BlockBackend | undefined,
  onProgress: RebaseOptions['onProgress'],
): Promise<void> {
  const size = top.length;
  onProgress?.(0, size);
  for await (const extent of top.extents(0, size)) {
    const own = extent.allocated && (extent.depth ?? 0) === 0;
    if (!own) {
      for (let pos = extent.offset; pos < extent.offset + extent.length; pos += CHUNK) {
        const n = Math.min(CHUNK, extent.offset + extent.length - pos);
        const before = await top.read(pos, n);
        const after = await readOrZeros(target, pos, n);
        await writeDifferentSectors(top, pos, before, after);
      }
    }
    onProgress?.(extent.offset + extent.length, size);
  }
}
