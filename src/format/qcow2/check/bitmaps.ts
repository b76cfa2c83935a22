/**
 * The persistent dirty bitmaps' share of `check` (QEMU's qcow2_check_bitmaps_refcounts): the
 * bitmap directory, each bitmap's table and the clusters the table names are counted. A
 * directory QEMU would refuse (bitmap_list_load, check_dir_entry) is a corruption that stops the
 * check; an invalid table entry (check_table_entry) is a corruption.
 * The structures are decoded by codec/bitmap-directory.ts.
 */
import { hex64 } from '../../../util/u64.js';
import { decodeBitmapDirectory, decodeBitmapTableEntry } from '../codec/bitmap-directory.js';
import type { BitmapsExtension } from '../codec/header-extensions.js';
import { CheckAbort, type CheckContext } from './context.js';

/** Bitmap table entries are read in pieces of this many bytes. */
const CHUNK = 1 << 20;

/** Counts the bitmaps' clusters. `budget` bounds the table bytes read (it is shared and decreased). */
export async function countBitmaps(
  ctx: CheckContext,
  ext: BitmapsExtension,
  virtualSize: number,
  budget: { bytes: number },
): Promise<void> {
  ctx.inc(ext.directoryOffset, ext.directorySize);
  const dir = await ctx.readAt(ext.directoryOffset, ext.directorySize);
  const parsed = decodeBitmapDirectory(dir, ext.nbBitmaps, ctx.cs, virtualSize);
  if (typeof parsed === 'string') {
    ctx.log(`ERROR bitmap directory: ${parsed}`);
    ctx.res.corruptions++;
    throw new CheckAbort('Invalid argument');
  }
  for (const bm of parsed) {
    const bytes = bm.tableSize * 8;
    ctx.inc(bm.tableOffset, bytes);
    const inFile = ctx.inFile(bm.tableOffset, bytes);
    budget.bytes -= inFile;
    if (budget.bytes < 0) {
      ctx.res.checkErrors++;
      ctx.log('ERROR: the bitmap tables add up to more than the image file holds');
      throw new CheckAbort('File too large');
    }
    const n = Math.floor(inFile / 8);
    for (let first = 0; first < n; first += CHUNK / 8) {
      const count = Math.min(CHUNK / 8, n - first);
      const chunk = await ctx.readAt(bm.tableOffset + first * 8, count * 8);
      for (let j = 0; j < count; j++) {
        const entry = decodeBitmapTableEntry(chunk, j, ctx.cs);
        if (entry.kind === 'invalid') {
          ctx.log(`ERROR bitmap '${bm.name}': invalid table entry ${first + j}: ${hex64(entry.high, entry.low)}`);
          ctx.res.corruptions++;
        } else if (entry.kind === 'data') {
          // Past 2^53 the offset is not exact as a number: the message takes it from the words.
          const high = chunk.readUInt32BE(j * 8) & 0xffffff;
          const low = (chunk.readUInt32BE(j * 8 + 4) & 0xfffffe00) >>> 0;
          if (entry.offset >= 2 ** 53) ctx.reportBeyondEnd(hex64(high, low), ctx.cs);
          else ctx.inc(entry.offset, ctx.cs);
        }
      }
    }
  }
}
