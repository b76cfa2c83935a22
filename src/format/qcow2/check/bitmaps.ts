/**
 * The persistent dirty bitmaps' share of `check` (QEMU's qcow2_check_bitmaps_refcounts): the
 * bitmap directory, each bitmap's table and the clusters the table names are counted. A
 * directory QEMU would refuse (bitmap_list_load, check_dir_entry) is a corruption that stops the
 * check; an invalid table entry (check_table_entry) is a corruption.
 *
 * The directory entry layout (docs/interop/qcow2.txt): u64 table offset, u32 table size (entries),
 * u32 flags, u8 type, u8 granularity bits, u16 name size, u32 extra data size, extra data, name,
 * padding to 8.
 */
import { hex64, TWO_POW_32 } from '../../../util/u64.js';
import type { BitmapsExtension } from '../codec/header-extensions.js';
import { CheckAbort, type CheckContext } from './context.js';

const ENTRY_HEADER = 24;
const MAX_TABLE_ENTRIES = 0x8000000;
const MAX_PHYS_BYTES = 0x20000000;
const MIN_GRANULARITY_BITS = 9;
const MAX_GRANULARITY_BITS = 31;
const MAX_NAME = 1023;
const RESERVED_FLAGS = 0xfffffffc;
const TYPE_DIRTY_TRACKING = 1;
/** Bitmap table entries are read in pieces of this many bytes. */
const CHUNK = 1 << 20;

interface BitmapRef {
  name: string;
  tableOffset: number;
  tableSize: number;
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

/** Parses the directory as bitmap_list_load does; a string says why QEMU would refuse it. */
function parseDirectory(ctx: CheckContext, dir: Buffer, nbBitmaps: number, virtualSize: number): BitmapRef[] | string {
  const out: BitmapRef[] = [];
  let pos = 0;
  while (pos < dir.length) {
    if (pos + ENTRY_HEADER > dir.length) return 'Broken bitmap directory';
    if (out.length + 1 > nbBitmaps) return 'More bitmaps found than specified in header extension';
    const tableHigh = dir.readUInt32BE(pos);
    const tableLow = dir.readUInt32BE(pos + 4);
    const tableSize = dir.readUInt32BE(pos + 8);
    const flags = dir.readUInt32BE(pos + 12);
    const type = dir[pos + 16]!;
    const granularity = dir[pos + 17]!;
    const nameSize = dir.readUInt16BE(pos + 18);
    const extra = dir.readUInt32BE(pos + 20);
    const size = align8(ENTRY_HEADER + nameSize + extra);
    if (pos + size > dir.length) return 'Broken bitmap directory';
    const nameStart = pos + ENTRY_HEADER + extra;
    const name = dir.toString('utf8', nameStart, nameStart + nameSize);
    if (extra !== 0) return 'Bitmap extra data is not supported';
    const tableOffset = tableHigh * TWO_POW_32 + tableLow;
    const phys = tableSize * ctx.cs;
    const bad =
      tableSize === 0 ||
      tableOffset === 0 ||
      tableHigh > 0x1fffff ||
      tableLow % ctx.cs !== 0 ||
      tableSize > MAX_TABLE_ENTRIES ||
      granularity > MAX_GRANULARITY_BITS ||
      granularity < MIN_GRANULARITY_BITS ||
      (flags & RESERVED_FLAGS) !== 0 ||
      nameSize > MAX_NAME ||
      type !== TYPE_DIRTY_TRACKING ||
      phys > MAX_PHYS_BYTES ||
      virtualSize > phys * 8 * 2 ** granularity;
    if (bad) return `Bitmap '${name}' doesn't satisfy the constraints`;
    out.push({ name, tableOffset, tableSize });
    pos += size;
  }
  if (out.length !== nbBitmaps) return 'Less bitmaps found than specified in header extension';
  return out;
}

/** Counts the bitmaps' clusters. `budget` bounds the table bytes read (it is shared and decreased). */
export async function countBitmaps(
  ctx: CheckContext,
  ext: BitmapsExtension,
  virtualSize: number,
  budget: { bytes: number },
): Promise<void> {
  ctx.inc(ext.directoryOffset, ext.directorySize);
  const dir = await ctx.readAt(ext.directoryOffset, ext.directorySize);
  const parsed = parseDirectory(ctx, dir, ext.nbBitmaps, virtualSize);
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
        const high = chunk.readUInt32BE(j * 8);
        const low = chunk.readUInt32BE(j * 8 + 4);
        if (high === 0 && low === 0) continue;
        const offHigh = high & 0xffffff;
        const offLow = (low & 0xfffffe00) >>> 0;
        const hasOffset = offHigh !== 0 || offLow !== 0;
        const invalid =
          (high & 0xff000000) !== 0 || (low & 0x1fe) !== 0 || (hasOffset && ((low & 1) !== 0 || offLow % ctx.cs !== 0));
        if (invalid) {
          ctx.log(`ERROR bitmap '${bm.name}': invalid table entry ${first + j}: ${hex64(high, low)}`);
          ctx.res.corruptions++;
          continue;
        }
        if (!hasOffset) continue;
        if (offHigh > 0x1fffff) ctx.reportBeyondEnd(hex64(offHigh, offLow), ctx.cs);
        else ctx.inc(offHigh * TWO_POW_32 + offLow, ctx.cs);
      }
    }
  }
}
