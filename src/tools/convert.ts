/**
 * `convert`: copies an image into a new one of any format, as qemu-img convert does. Ranges the
 * source reports as zero are skipped (the new target reads as zero already), runs of zero bytes
 * of at least `minSparse` are not written, and with `compress` every cluster is stored
 * compressed. The target is written with cache=unsafe and flushed once at the end, unless told
 * otherwise. Several chunks are in flight at once, as qemu-img's coroutines are.
 */

import { open } from 'node:fs/promises';
import type { BlockBackend } from '../block/backend.js';
import type { CacheModeName } from '../block/cache-mode.js';
import { fromSystemError, VdiskError } from '../block/errors.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { StagedFile } from '../io/staged-file.js';
import { fileName, optionsObject } from './arguments.js';
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
  /** -n: write into an existing target instead of creating it. */
  noCreate?: boolean;
  /** Requests in flight at once (qemu-img -m; default 8). */
  parallel?: number;
  onProgress?: (done: number, total: number) => void;
}

const CHUNK = 2 * 1024 * 1024;

export async function convertImage(options: ConvertOptions): Promise<void> {
  const o = optionsObject(options, 'convert options');
  fileName(o.source, 'source file name');
  fileName(o.target, 'target file name');
  const minSparse = o.minSparse ?? 4096;
  if (!Number.isInteger(minSparse) || minSparse < 0)
    throw new VdiskError('EINVAL', 'Invalid minimum zero buffer size for sparse output specified');
  const source = (
    await openImageWithFormat(o.source, { format: o.sourceFormat ?? 'probe', readOnly: true, cache: o.sourceCache })
  ).backend;
  try {
    const format = o.targetFormat ?? 'raw';
    if (o.noCreate) {
      await convertInto(source, o.target, format, { ...o, minSparse });
      return;
    }
    // A new target is built out of sight and named only once complete and synced: a failed
    // convert leaves no file, or the old one untouched.
    const plan = await planCreateWithBacking({
      filename: o.target,
      format,
      size: source.length,
      options: o.options ?? [],
    });
    const staged = await StagedFile.begin(o.target);
    try {
      await executeCreate(plan, undefined, staged);
      await convertInto(source, o.target, format, { ...o, minSparse }, staged.opener);
      await staged.commit();
    } finally {
      await staged.abort();
    }
  } finally {
    await source.close();
  }
}

/** Copies `source` into the image `target` (opened through `openFile` when it is being built). */
async function convertInto(
  source: BlockBackend,
  filename: string,
  format: FormatName,
  o: ConvertOptions & { minSparse: number },
  openFile?: (path: string, flags: number, mode: number) => Promise<number>,
): Promise<void> {
  const target = (await openImageWithFormat(filename, { format, cache: o.targetCache ?? 'unsafe' }, openFile)).backend;
  try {
    if (o.compress && !target.describe().compressedWrites) {
      throw new VdiskError('ENOTSUP', `Compression is not supported for the ${format} format`);
    }
    if (target.length < source.length) {
      throw new VdiskError(
        'EINVAL',
        `The target is smaller (${target.length} bytes) than the source (${source.length} bytes)`,
      );
    }
    await copy(source, target, o);
  } finally {
    await target.close();
  }
  // cache=unsafe ignores flushes while copying; the finished image is made durable once (a
  // staged target when it is committed).
  if (!openFile) await syncFile(filename);
}

async function copy(
  source: BlockBackend,
  target: BlockBackend,
  o: ConvertOptions & { minSparse: number },
): Promise<void> {
  const size = source.length;
  const unit = o.compress ? (target.describe().clusterSize ?? 65536) : CHUNK;
  const chunk = Math.max(unit, Math.floor(CHUNK / unit) * unit);
  let next = 0;
  let done = 0;
  o.onProgress?.(0, size);
  const worker = async () => {
    while (next < size) {
      const offset = next;
      const length = Math.min(chunk, size - offset);
      next += length;
      await copyChunk(source, target, offset, length, o);
      done += length;
      o.onProgress?.(done, size);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.parallel ?? 8) }, worker));
}

async function copyChunk(
  source: BlockBackend,
  target: BlockBackend,
  offset: number,
  length: number,
  o: ConvertOptions & { minSparse: number },
): Promise<void> {
  const end = offset + length;
  if (o.compress) {
    // Compressed clusters are written whole: read the chunk unless it is all zeros.
    const extent = await source.blockStatus(offset, length);
    if (extent.zero && extent.length === length) {
      if (o.noCreate) await target.writeZeroes(offset, length, { mayUnmap: true });
      return;
    }
    await writeCompressed(target, offset, await source.read(offset, length), o.noCreate === true);
    return;
  }
  let pos = offset;
  while (pos < end) {
    const extent = await source.blockStatus(pos, end - pos);
    const runEnd = pos + extent.length;
    if (extent.zero) {
      // A new target reads as zeros already; an existing one (-n) must be zeroed.
      if (o.noCreate) await target.writeZeroes(pos, runEnd - pos, { mayUnmap: true });
    } else {
      const data = await source.read(pos, runEnd - pos);
      await writeSparse(target, pos, data, o.minSparse, o.noCreate === true);
    }
    pos = runEnd;
  }
}

/** Writes `data`, leaving out aligned runs of at least `minSparse` zero bytes. */
async function writeSparse(
  target: BlockBackend,
  offset: number,
  data: Buffer,
  minSparse: number,
  zeroSkipped: boolean,
): Promise<void> {
  if (minSparse === 0) {
    await target.write(offset, data);
    return;
  }
  let runStart = -1;
  const flush = async (to: number) => {
    if (runStart >= 0) await target.write(offset + runStart, data.subarray(runStart, to));
    runStart = -1;
  };
  for (let pos = 0; pos < data.length; pos += minSparse) {
    const end = Math.min(pos + minSparse, data.length);
    const zero = end - pos === minSparse && isZero(data, pos, end);
    if (zero) {
      await flush(pos);
      if (zeroSkipped) await target.writeZeroes(offset + pos, end - pos, { mayUnmap: true });
    } else if (runStart < 0) {
      runStart = pos;
    }
  }
  await flush(data.length);
}

/** Stores every whole cluster compressed; all-zero clusters are left out. */
async function writeCompressed(
  target: BlockBackend,
  offset: number,
  data: Buffer,
  zeroSkipped: boolean,
): Promise<void> {
  const cs = target.describe().clusterSize ?? 65536;
  for (let pos = 0; pos < data.length; pos += cs) {
    const piece = data.subarray(pos, Math.min(pos + cs, data.length));
    if (isZero(piece, 0, piece.length)) {
      if (zeroSkipped) await target.writeZeroes(offset + pos, piece.length, { mayUnmap: true });
      continue;
    }
    await target.writeCompressed(offset + pos, piece);
  }
}

const ZEROS = Buffer.alloc(CHUNK);

function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let pos = start; pos < end; pos += ZEROS.length) {
    const stop = Math.min(end, pos + ZEROS.length);
    if (buf.compare(ZEROS, 0, stop - pos, pos, stop) !== 0) return false;
  }
  return true;
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
