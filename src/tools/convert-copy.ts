/**
 * The copy behind convert: the source's block status is walked once, run by run (an empty
 * 8 TiB image is a handful of runs, not four million chunks), and workers copy what holds
 * data in chunks, several in flight. Zero runs are not written to a new target (it reads as
 * zeros already), zeroed in an existing one (-n, unless --target-is-zero), and written as zero
 * bytes with -S 0 (fully allocated output, as qemu-img makes it). Reads overlap; writes land in
 * the order of the image unless out-of-order writes are allowed (-W), as in qemu-img. Over a
 * backing file (-B) only what differs from it is written. Several sources go one after another
 * (`at` is where a source starts in the target).
 */
import type { BlockBackend } from '../block/backend.js';
import { onSide } from './convert-side.js';
import { readOrZeros, writeDifferentSectors } from './differing-sectors.js';

const CHUNK = 2 * 1024 * 1024;

export interface CopyOptions {
  compress?: boolean;
  /** The smallest run of zero bytes left unwritten; 0 writes everything. */
  minSparse: number;
  /** The target existed (-n): zero runs must be zeroed, not skipped. */
  noCreate?: boolean;
  /** --target-is-zero: an existing target reads as zeros already. */
  targetIsZero?: boolean;
  /** -W: writes may land out of order. */
  outOfOrder?: boolean;
  /** -B: the target's backing file; only what differs from it is written. */
  backing?: BlockBackend;
  /** Where this source starts in the target (several sources are concatenated). */
  at?: number;
  parallel?: number;
  onProgress?: (done: number, total: number) => void;
}

interface Piece {
  offset: number;
  length: number;
  zero: boolean;
  /** The piece's place in the image order (writes wait for the pieces before it unless -W). */
  index: number;
}

/**
 * The source cut into pieces: zero runs whole, data runs in chunks of `chunk` bytes aligned to
 * `unit` (compressed writes cover whole clusters, so data pieces grow to cluster boundaries).
 */
async function* pieces(source: BlockBackend, chunk: number, unit: number): AsyncGenerator<Piece> {
  const size = source.length;
  let frontier = 0;
  let index = 0;
  for await (const extent of source.extents(0, size)) {
    const end = extent.offset + extent.length;
    if (end <= frontier) continue;
    if (extent.zero) {
      yield { offset: frontier, length: end - frontier, zero: true, index: index++ };
      frontier = end;
      continue;
    }
    let pos = Math.max(frontier, Math.floor(extent.offset / unit) * unit);
    const last = Math.min(size, Math.ceil(end / unit) * unit);
    while (pos < last) {
      const next = Math.min(last, (Math.floor(pos / chunk) + 1) * chunk);
      yield { offset: pos, length: next - pos, zero: false, index: index++ };
      pos = next;
    }
    frontier = last;
  }
}

/** Lets writes through in the order of their pieces. */
class WriteOrder {
  #next = 0;
  #failed = false;
  readonly #waiting = new Map<number, () => void>();

  turn(index: number): Promise<void> {
    if (index === this.#next || this.#failed) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.set(index, resolve));
  }

  /** A piece failed before its write: nobody waits for it any more (the copy is failing). */
  fail(): void {
    this.#failed = true;
    for (const wake of this.#waiting.values()) wake();
    this.#waiting.clear();
  }

  done(index: number): void {
    if (index !== this.#next) return;
    this.#next++;
    const wake = this.#waiting.get(this.#next);
    this.#waiting.delete(this.#next);
    wake?.();
  }
}

export async function copyImage(source: BlockBackend, target: BlockBackend, o: CopyOptions): Promise<void> {
  const size = source.length;
  const unit = o.compress ? (target.describe().clusterSize ?? 65536) : 1;
  const chunk = Math.max(unit, Math.floor(CHUNK / unit) * unit);
  const work = pieces(source, chunk, unit);
  const order = o.outOfOrder ? undefined : new WriteOrder();
  let done = 0;
  o.onProgress?.(0, size);
  const worker = async () => {
    for (;;) {
      // Workers share the generator: each next() hands out the following piece.
      const { value: piece, done: finished } = await onSide('source', () => work.next(), 'error while reading');
      if (finished) return;
      let data: Buffer | undefined;
      try {
        data = piece.zero
          ? undefined
          : await onSide(
              'source',
              () => source.read(piece.offset, piece.length),
              `error while reading at byte ${piece.offset}`,
            );
      } catch (err) {
        order?.fail();
        throw err;
      }
      await order?.turn(piece.index);
      try {
        await onSide('target', () => writePiece(target, piece, data, o), `error while writing at byte ${at(o, piece)}`);
      } finally {
        order?.done(piece.index);
      }
      done += piece.length;
      o.onProgress?.(done, size);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.parallel ?? 8) }, worker));
}

const at = (o: CopyOptions, piece: Piece) => (o.at ?? 0) + piece.offset;

async function writePiece(target: BlockBackend, piece: Piece, data: Buffer | undefined, o: CopyOptions): Promise<void> {
  const offset = at(o, piece);
  const { length } = piece;
  if (o.backing) {
    await writeOverBacking(target, o.backing, offset, length, data, o.compress === true);
    return;
  }
  if (!data) {
    if (o.noCreate && !o.targetIsZero) await target.writeZeroes(offset, length, { mayUnmap: true });
    else if (o.minSparse === 0 && !o.compress && !o.noCreate) await writeZeroBytes(target, offset, length);
    return;
  }
  const zeroSkipped = o.noCreate === true && !o.targetIsZero;
  if (o.compress) await writeCompressed(target, offset, data, zeroSkipped);
  else await writeSparse(target, offset, data, o.minSparse, zeroSkipped);
}

/** -B: what differs from the backing file; zeros where it has data and the source has none. */
async function writeOverBacking(
  target: BlockBackend,
  backing: BlockBackend,
  offset: number,
  length: number,
  data: Buffer | undefined,
  compress: boolean,
): Promise<void> {
  if (!data) {
    const inside = Math.max(0, Math.min(length, backing.length - offset));
    for await (const extent of backing.extents(offset, inside)) {
      if (!extent.zero) await target.writeZeroes(extent.offset, extent.length, { mayUnmap: true });
    }
    return;
  }
  const present = await readOrZeros(backing, offset, length);
  if (!compress) {
    await writeDifferentSectors(target, offset, data, present);
    return;
  }
  const cs = target.describe().clusterSize ?? 65536;
  for (let pos = 0; pos < data.length; pos += cs) {
    const end = Math.min(pos + cs, data.length);
    if (data.compare(present, pos, end, pos, end) !== 0)
      await target.writeCompressed(offset + pos, data.subarray(pos, end));
  }
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

/** An empty compressed write ends the run: qcow2 rounds its file up to a whole sector, as qemu-img convert -c leaves it. */
export async function finishCompressed(target: BlockBackend): Promise<void> {
  // Not over a backing file, where qemu-img does not either.
  if (target.describe().backingChain.length === 0) {
    await onSide('target', () => target.writeCompressed(0, Buffer.alloc(0)), 'error while writing');
  }
}
