/**
 * The copy behind convert: the source's block status is walked once, run by run (an empty
 * 8 TiB image is a handful of runs, not four million chunks), and workers copy what holds
 * data in chunks, several in flight. Zero runs are not written to a new target (it reads as
 * zeros already), zeroed in an existing one (-n), and written as zero bytes with -S 0 (fully
 * allocated output, as qemu-img makes it).
 */
import type { BlockBackend } from '../block/backend.js';
import { onSide } from './convert-side.js';

const CHUNK = 2 * 1024 * 1024;

export interface CopyOptions {
  compress?: boolean;
  /** The smallest run of zero bytes left unwritten; 0 writes everything. */
  minSparse: number;
  /** The target existed (-n): zero runs must be zeroed, not skipped. */
  noCreate?: boolean;
  parallel?: number;
  onProgress?: (done: number, total: number) => void;
}

interface Piece {
  offset: number;
  length: number;
  zero: boolean;
}

/**
 * The source cut into pieces: zero runs whole, data runs in chunks of `chunk` bytes aligned to
 * `unit` (compressed writes cover whole clusters, so data pieces grow to cluster boundaries).
 */
async function* pieces(source: BlockBackend, chunk: number, unit: number): AsyncGenerator<Piece> {
  const size = source.length;
  let frontier = 0;
  for await (const extent of source.extents(0, size)) {
    const end = extent.offset + extent.length;
    if (end <= frontier) continue;
    if (extent.zero) {
      yield { offset: frontier, length: end - frontier, zero: true };
      frontier = end;
      continue;
    }
    let pos = Math.max(frontier, Math.floor(extent.offset / unit) * unit);
    const last = Math.min(size, Math.ceil(end / unit) * unit);
    while (pos < last) {
      const next = Math.min(last, (Math.floor(pos / chunk) + 1) * chunk);
      yield { offset: pos, length: next - pos, zero: false };
      pos = next;
    }
    frontier = last;
  }
}

export async function copyImage(source: BlockBackend, target: BlockBackend, o: CopyOptions): Promise<void> {
  const size = source.length;
  const unit = o.compress ? (target.describe().clusterSize ?? 65536) : 1;
  const chunk = Math.max(unit, Math.floor(CHUNK / unit) * unit);
  const work = pieces(source, chunk, unit);
  let done = 0;
  o.onProgress?.(0, size);
  const worker = async () => {
    for (;;) {
      // Workers share the generator: each next() hands out the following piece.
      const { value: piece, done: finished } = await onSide('source', () => work.next(), 'error while reading');
      if (finished) return;
      await copyPiece(source, target, piece, o);
      done += piece.length;
      o.onProgress?.(done, size);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.parallel ?? 8) }, worker));
  // An empty compressed write ends the run: qcow2 rounds its file up to a whole sector, as
  // qemu-img convert -c leaves it (not over a backing file, where it does not either).
  if (o.compress && target.describe().backingChain.length === 0) {
    await onSide('target', () => target.writeCompressed(0, Buffer.alloc(0)), 'error while writing');
  }
}

async function copyPiece(source: BlockBackend, target: BlockBackend, piece: Piece, o: CopyOptions): Promise<void> {
  const { offset, length } = piece;
  const writing = `error while writing at byte ${offset}`;
  if (piece.zero) {
    if (o.noCreate) await onSide('target', () => target.writeZeroes(offset, length, { mayUnmap: true }), writing);
    else if (o.minSparse === 0 && !o.compress)
      await onSide('target', () => writeZeroBytes(target, offset, length), writing);
    return;
  }
  const data = await onSide('source', () => source.read(offset, length), `error while reading at byte ${offset}`);
  await onSide(
    'target',
    () =>
      o.compress
        ? writeCompressed(target, offset, data, o.noCreate === true)
        : writeSparse(target, offset, data, o.minSparse, o.noCreate === true),
    writing,
  );
}

const ZEROS = Buffer.alloc(CHUNK);

/** -S 0: zero runs are written as zero bytes, so the target is fully allocated. */
async function writeZeroBytes(target: BlockBackend, offset: number, length: number): Promise<void> {
  for (let pos = 0; pos < length; pos += ZEROS.length) {
    await target.write(offset + pos, ZEROS.subarray(0, Math.min(ZEROS.length, length - pos)));
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

function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let pos = start; pos < end; pos += ZEROS.length) {
    const stop = Math.min(end, pos + ZEROS.length);
    if (buf.compare(ZEROS, 0, stop - pos, pos, stop) !== 0) return false;
  }
  return true;
}
