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
import { fromSystemError, VdiskError } from '../block/errors.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { StagedFile } from '../io/staged-file.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { isNbdUri } from '../remote/nbd/uri.js';
import { fileName, optionsObject } from './arguments.js';
import { copyImage } from './convert-copy.js';
import { onSide, sideError } from './convert-side.js';
import { executeCreate, planCreateWithBacking } from './create.js';

export interface ConvertOptions {
  source: string;
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
  /** -n: write into an existing target instead of creating it. */
  noCreate?: boolean;
  /** Requests in flight at once (qemu-img -m; default 8). */
  parallel?: number;
  /** Settings for the NBD client, for every NBD URI the call opens. */
  nbd?: NbdClientOptions;
  onProgress?: (done: number, total: number) => void;
}

export async function convertImage(options: ConvertOptions): Promise<void> {
  const o = optionsObject(options, 'convert options');
  fileName(o.source, 'source file name');
  fileName(o.target, 'target file name');
  const minSparse = o.minSparse ?? 4096;
  if (!Number.isInteger(minSparse) || minSparse < 0)
    throw new VdiskError('EINVAL', 'Invalid minimum zero buffer size for sparse output specified');
  const source = await onSide('source', async () => {
    const opened = await openImageWithFormat(o.source, {
      format: o.sourceFormat ?? 'probe',
      readOnly: true,
      cache: o.sourceCache,
      forceShare: o.forceShare,
      nbd: o.nbd,
    });
    return opened.backend;
  });
  try {
    // The source's tables are read whole before anything is done to the target: a source whose
    // metadata is broken fails here, before a target is created, opened or (with -n) written.
    await onSide('source', () => walkBlockStatus(source), 'error while reading');
    const format = o.targetFormat ?? 'raw';
    const remote = isNbdUri(o.target);
    // Raw data in an export is the export itself: it is written in place, its zero runs zeroed.
    if (o.noCreate || (remote && format === 'raw')) {
      await convertInto(source, o.target, format, { ...o, minSparse, noCreate: true });
      return;
    }
    if (remote) {
      // Any other format is made inside the export first (qemu-img's simple create), then filled.
      const plan = await onSide('target', () =>
        planCreateWithBacking({
          filename: o.target,
          format,
          size: source.length,
          options: o.options ?? [],
          nbd: o.nbd,
        }),
      );
      await onSide('target', () => executeCreate(plan));
      await convertInto(source, o.target, format, { ...o, minSparse });
      return;
    }
    // A new target is built out of sight and named only once complete and synced: a failed
    // convert leaves no file, or the old one untouched.
    const plan = await onSide('target', () =>
      planCreateWithBacking({ filename: o.target, format, size: source.length, options: o.options ?? [] }),
    );
    const staged = await onSide('target', () => StagedFile.begin(o.target));
    try {
      await onSide('target', () => executeCreate(plan, undefined, staged));
      await convertInto(source, o.target, format, { ...o, minSparse }, staged.opener);
      await onSide('target', () => staged.commit());
    } finally {
      await staged.abort();
    }
  } finally {
    await source.close();
  }
}

async function walkBlockStatus(source: BlockBackend): Promise<void> {
  for await (const _extent of source.extents(0, source.length));
}

/** Copies `source` into the image `target` (opened through `openFile` when it is being built). */
async function convertInto(
  source: BlockBackend,
  filename: string,
  format: FormatName,
  o: ConvertOptions & { minSparse: number },
  openFile?: (path: string, flags: number, mode: number) => Promise<number>,
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
    if (target.length < source.length) {
      throw sideError(
        'target',
        new VdiskError(
          'EINVAL',
          `The target is smaller (${target.length} bytes) than the source (${source.length} bytes)`,
        ),
      );
    }
    await copyImage(source, target, o);
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
