/**
 * `compare`: whether two images read the same, as qemu-img compare decides it. Ranges both
 * sides report as zero are not read; the first difference is named by its 512-byte sector.
 * With `strict`, allocation status and size must match too.
 */
import type { BlockBackend } from '../block/backend.js';
import type { CacheModeName } from '../block/cache-mode.js';
import type { FormatName } from '../format/format.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { type ImageSource, withImage } from './image-source.js';

export interface CompareOptions {
  formatA?: FormatName | 'probe';
  formatB?: FormatName | 'probe';
  strict?: boolean;
  cache?: CacheModeName;
  /** Read images another process holds writable (qemu-img's -U). */
  forceShare?: boolean;
  /** Settings for the NBD client, for every NBD URI the call opens. */
  nbd?: NbdClientOptions;
  onProgress?: (done: number, total: number) => void;
}

export type CompareResult =
  | { identical: true; sizeMismatch: boolean }
  | { identical: false; reason: 'content'; offset: number; sizeMismatch: boolean }
  | { identical: false; reason: 'size' }
  | { identical: false; reason: 'allocation'; offset: number };

const CHUNK = 2 * 1024 * 1024;
const SECTOR = 512;

/** Compares two images, each a path (opened read-only for the call) or an open image. */
export function compareImages(a: ImageSource, b: ImageSource, options: CompareOptions = {}): Promise<CompareResult> {
  const open = (format: FormatName | 'probe' | undefined) => ({
    format: format ?? 'probe',
    readOnly: true,
    cache: options.cache,
    forceShare: options.forceShare,
    nbd: options.nbd,
  });
  return withImage(a, open(options.formatA), (left) =>
    withImage(b, open(options.formatB), (right) => compareBackends(left, right, options)),
  );
}

export async function compareBackends(
  a: BlockBackend,
  b: BlockBackend,
  options: Pick<CompareOptions, 'strict' | 'onProgress'> = {},
): Promise<CompareResult> {
  const sizeMismatch = a.length !== b.length;
  if (sizeMismatch && options.strict) return { identical: false, reason: 'size' };
  const common = Math.min(a.length, b.length);
  const total = Math.max(a.length, b.length);
  let offset = 0;
  while (offset < common) {
    const [ea, eb] = await Promise.all([
      a.blockStatus(offset, common - offset),
      b.blockStatus(offset, common - offset),
    ]);
    // Where both read as zeros nothing is read, so the run is taken whole (an empty 1 TiB image
    // is one step); data is read in chunks.
    const bothZero = ea.zero && eb.zero;
    const length = Math.min(ea.length, eb.length, bothZero ? Number.MAX_SAFE_INTEGER : CHUNK);
    if (options.strict && (ea.allocated !== eb.allocated || ea.zero !== eb.zero)) {
      return { identical: false, reason: 'allocation', offset };
    }
    if (!bothZero) {
      const [da, db] = await Promise.all([
        readOrZero(a, offset, length, ea.zero),
        readOrZero(b, offset, length, eb.zero),
      ]);
      const at = firstDifference(da, db);
      if (at >= 0) return { identical: false, reason: 'content', offset: offset + at, sizeMismatch };
    }
    offset += length;
    options.onProgress?.(offset, total);
  }
  // The longer image's tail must read as zeros.
  const longer = a.length > b.length ? a : b;
  while (offset < longer.length) {
    const e = await longer.blockStatus(offset, longer.length - offset);
    const length = e.zero ? e.length : Math.min(e.length, CHUNK);
    if (!e.zero) {
      const at = firstDifference(await longer.read(offset, length), Buffer.alloc(length));
      if (at >= 0) return { identical: false, reason: 'content', offset: offset + at, sizeMismatch };
    }
    offset += length;
    options.onProgress?.(offset, total);
  }
  return { identical: true, sizeMismatch };
}

async function readOrZero(backend: BlockBackend, offset: number, length: number, zero: boolean): Promise<Buffer> {
  return zero ? Buffer.alloc(length) : backend.read(offset, length);
}

/** The start of the first 512-byte sector where the buffers differ, or -1. */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let pos = 0; pos < a.length; pos += SECTOR) {
    const end = Math.min(pos + SECTOR, a.length);
    if (a.compare(b, pos, end, pos, end) !== 0) return pos;
  }
  return -1;
}
