/**
 * `convert`: copies an image into a new one of any format, as qemu-img convert does. Ranges the
 * source reports as zero are skipped (the new target reads as zero already), runs of zero bytes
 * of at least `minSparse` are not written, and with `compress` every cluster is stored
 * compressed. The target is written with cache=unsafe and flushed once at the end, unless told
 * otherwise. Several chunks are in flight at once, as qemu-img's coroutines are. Every error
 * names the side that failed ("source: …", "target: …"), and the source's tables are read whole
 * before the target is touched. A target that is an NBD URI is an existing export (qemu-img's
 * "simple create" for protocols that cannot make files): it must be large enough, its zero runs
 * are zeroed, and it is flushed when done.
 */

import { open } from 'node:fs/promises';
import type { BlockBackend } from '../block/backend.js';
import type { CacheModeName } from '../block/cache-mode.js';
import type { BitmapInfo } from '../block/driver.js';
import { fromSystemError, VdiskError } from '../block/errors.js';
import { backingPath } from '../engine/backing.js';
import { formatDefinition } from '../engine/formats.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName, SnapshotRef } from '../format/format.js';
import { StagedFile } from '../io/staged-file.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { isNbdUri } from '../remote/nbd/uri.js';
import { fileName, optionsObject } from './arguments.js';
import { bitmapsToCopy, checkBitmapTarget, copyBitmaps } from './convert-bitmaps.js';
import { copyImage, finishCompressed } from './convert-copy.js';
import { onSide, sideError } from './convert-side.js';
import { type ConvertSources, openSources } from './convert-sources.js';
import { executeCreate, planCreateWithBacking } from './create.js';

export interface ConvertOptions {
  /** The source image, or several, copied one after the other into the target. */
  source: string | readonly string[];
  target: string;
  sourceFormat?: FormatName | 'probe';
  /** Output format; default raw, as qemu-img. */
  targetFormat?: FormatName;
  /** -o options for the new image. */
  options?: string | readonly string[];
  compress?: boolean;
  /** -S: the smallest run of zero bytes left unwritten (default 4096; 0 writes everything). */
  minSparse?: number;
  /** -t: cache mode for the target (default unsafe). */
  targetCache?: CacheModeName;
  /** -T: cache mode for the source (default writeback). */
  sourceCache?: CacheModeName;
  /** -U: read a source another process holds writable, without the image lock. */
  forceShare?: boolean;
  /** -l: convert this internal snapshot of the source instead of its current content. */
  snapshot?: SnapshotRef;
  /** -n: write into an existing target instead of creating it. */
  noCreate?: boolean;
  /** Requests in flight at once (qemu-img -m; default 8). */
  parallel?: number;
  /** --bitmaps: copy the source's persistent bitmaps into the target. */
  bitmaps?: boolean;
  /** --skip-broken-bitmaps: leave out inconsistent bitmaps instead of failing. */
  skipBrokenBitmaps?: boolean;
  /** -W: writes may land out of order (default: in the order of the image, as qemu-img). */
  outOfOrder?: boolean;
  /** -B: the new image is an overlay of this backing file; only what differs from it is written. */
  backing?: string;
  /** -F: the backing file's format (needed with -B). */
  backingFormat?: string;
  /** --target-is-zero: with -n, the existing target reads as zeros already. */
  targetIsZero?: boolean;
  /** Settings for the NBD client, for every NBD URI the call opens. */
  nbd?: NbdClientOptions;
  onProgress?: (done: number, total: number) => void;
  /** Called with each warning (a bitmap left out). */
  onWarning?: (message: string) => void;
}

export async function convertImage(options: ConvertOptions): Promise<void> {
  const o = optionsObject(options, 'convert options');
  const names = typeof o.source === 'string' ? [o.source] : [...(o.source ?? [])];
  if (names.length === 0) fileName(undefined, 'source file name');
  for (const name of names) fileName(name, 'source file name');
  fileName(o.target, 'target file name');
  const minSparse = o.minSparse ?? 4096;
  if (!Number.isInteger(minSparse) || minSparse < 0)
    throw new VdiskError('EINVAL', 'Invalid minimum zero buffer size for sparse output specified');
  if (o.skipBrokenBitmaps && !o.bitmaps)
    throw new VdiskError('EINVAL', 'Use of --skip-broken-bitmaps requires --bitmaps');
  if (o.targetIsZero && !o.noCreate) throw new VdiskError('EINVAL', '--target-is-zero requires use of -n flag');
  if (o.targetIsZero && o.backing !== undefined) {
    throw new VdiskError('EINVAL', 'Cannot use --target-is-zero when the destination image has a backing file');
  }
  if (o.backing !== undefined && o.backingFormat === undefined) {
    throw new VdiskError('EINVAL', 'Use of backing file requires explicit backing format');
  }
  if (o.snapshot !== undefined && names.length > 1) {
    throw new VdiskError('EINVAL', 'No support for concatenating multiple snapshot');
  }
  const format = o.targetFormat ?? 'raw';
  const sources = await openSources(names, {
    format: o.sourceFormat ?? 'probe',
    cache: o.sourceCache,
    forceShare: o.forceShare,
    snapshot: o.snapshot,
    nbd: o.nbd,
  });
  try {
    const bitmapList = o.bitmaps
      ? bitmapsToCopy(sources.list[0]!.image, Boolean(o.skipBrokenBitmaps), o.onWarning ?? (() => {}))
      : [];
    const backing =
      o.backing === undefined ? undefined : await openTargetBacking(o.target, o.backing, o.backingFormat!);
    try {
      await convertSources(sources, format, { ...o, minSparse, bitmapList }, backing);
    } finally {
      await backing?.close();
    }
  } finally {
    await sources.close();
  }
}

type Checked = ConvertOptions & { minSparse: number; bitmapList?: BitmapInfo[] };

async function convertSources(
  sources: ConvertSources,
  format: FormatName,
  o: Checked,
  backing: BlockBackend | undefined,
): Promise<void> {
  const remote = isNbdUri(o.target);
  // Raw data in an export is the export itself: it is written in place, its zero runs zeroed.
  if (o.noCreate || (remote && format === 'raw')) {
    await convertInto(sources, o.target, format, remote ? { ...o, noCreate: true } : o, undefined, backing);
    return;
  }
  if (remote) {
    // Any other format is made inside the export first (qemu-img's simple create), then filled.
    const plan = await onSide('target', () =>
      planCreateWithBacking({
        filename: o.target,
        format,
        size: sources.length,
        options: [...creationOptions(o.options), ...backingOptions(format, o)],
        nbd: o.nbd,
      }),
    );
    await onSide('target', () => executeCreate(plan));
    await convertInto(sources, o.target, format, o, undefined, backing);
    return;
  }
  // A new target is built out of sight and named only once complete and synced: a failed
  // convert leaves no file, or the old one untouched.
  const plan = await onSide('target', () =>
    planCreateWithBacking({
      filename: o.target,
      format,
      size: sources.length,
      options: [...creationOptions(o.options), ...backingOptions(format, o)],
    }),
  );
  const staged = await onSide('target', () => StagedFile.begin(o.target));
  try {
    await onSide('target', () => executeCreate(plan, undefined, staged));
    await convertInto(sources, o.target, format, o, staged.opener, backing);
    await onSide('target', () => staged.commit());
  } finally {
    await staged.abort();
  }
}

function creationOptions(options: ConvertOptions['options']): string[] {
  if (options === undefined) return [];
  return typeof options === 'string' ? [options] : [...options];
}

/** -B and -F as the backing_file and backing_fmt creation options, as qemu-img passes them. */
function backingOptions(format: FormatName, o: ConvertOptions): string[] {
  if (o.backing === undefined) return [];
  const names = formatDefinition(format).create?.options.map((d) => d.name) ?? [];
  if (!names.includes('backing_file')) {
    throw sideError('target', new VdiskError('ENOTSUP', `Backing file not supported for file format '${format}'`));
  }
  return [`backing_file=${o.backing.replaceAll(',', ',,')}`, `backing_fmt=${o.backingFormat}`];
}

/** The backing file a new target will name (relative to the target), read to compare with. */
async function openTargetBacking(target: string, name: string, format: string): Promise<BlockBackend> {
  return onSide('target', async () => {
    try {
      const opened = await openImageWithFormat(backingPath(target, name) ?? name, {
        format: formatDefinition(format).name,
        readOnly: true,
      });
      return opened.backend;
    } catch (err) {
      if (!(err instanceof VdiskError)) throw err;
      throw new VdiskError(err.code, `Could not open backing file '${name}': ${err.message}`, { cause: err });
    }
  });
}

/** Copies the sources into the image `filename` (opened through `openFile` when it is being built). */
async function convertInto(
  sources: ConvertSources,
  filename: string,
  format: FormatName,
  o: Checked,
  openFile?: (path: string, flags: number, mode: number) => Promise<number>,
  backing?: BlockBackend,
): Promise<void> {
  const remote = isNbdUri(filename);
  // An export's flushes go to the server: the close flushes it once, as syncFile does for a file.
  const cache = o.targetCache ?? (remote ? 'writeback' : 'unsafe');
  const target = await onSide('target', async () => {
    const opened = await openImageWithFormat(filename, { format, cache, nbd: o.nbd }, openFile);
    return opened.backend;
  });
  let copied = false;
  try {
    if (o.compress && !target.describe().compressedWrites) {
      throw sideError('target', new VdiskError('ENOTSUP', `Compression is not supported for the ${format} format`));
    }
    if (target.length < sources.length) {
      throw sideError(
        'target',
        new VdiskError(
          'EINVAL',
          `The target is smaller (${target.length} bytes) than the source (${sources.length} bytes)`,
        ),
      );
    }
    if (o.bitmaps) checkBitmapTarget(target, format);
    for (const { image, at } of sources.list) {
      const onProgress = o.onProgress && ((done: number) => o.onProgress!(at + done, sources.length));
      await copyImage(image, target, { ...o, at, backing, outOfOrder: o.outOfOrder, onProgress });
    }
    if (o.compress) await finishCompressed(target);
    if (o.bitmaps) await copyBitmaps(sources.list[0]!.image, target, o.bitmapList ?? []);
    copied = true;
  } finally {
    // After a failure the first error is the one to report, not one from closing.
    const closing = onSide('target', () => target.close());
    await (copied ? closing : closing.catch(() => {}));
  }
  // cache=unsafe ignores flushes while copying; the finished image is made durable once (a
  // staged target when it is committed).
  if (!openFile && !remote) await onSide('target', () => syncFile(filename));
}

async function syncFile(filename: string): Promise<void> {
  const handle = await open(filename, 'r+');
  try {
    await handle.datasync();
  } catch (err) {
    throw fromSystemError(err, `Could not flush '${filename}'`);
  } finally {
    await handle.close();
  }
}
