/**
 * The persistent dirty bitmaps' on-disk structures (docs/interop/qcow2.txt, "Bitmaps"): the
 * bitmap directory and the bitmap table entries. Pure functions over Buffers.
 *
 * Directory entry: u64 table offset, u32 table size (entries), u32 flags, u8 type, u8
 * granularity bits, u16 name size, u32 extra data size, extra data, name, padding to 8.
 * Table entry: bits 9-55 the offset of a cluster of bitmap data; offset 0 with bit 0 set means
 * "every bit of this cluster is set", with bit 0 clear "every bit is clear".
 */
import { TWO_POW_32 } from '../../../util/u64.js';

export const BITMAP_FLAG_IN_USE = 1;
export const BITMAP_FLAG_AUTO = 2;
const RESERVED_FLAGS = 0xfffffffc;
const TYPE_DIRTY_TRACKING = 1;
const ENTRY_HEADER = 24;

/** QEMU's limits on a bitmap (block/qcow2-bitmap.c). */
export const BITMAP_LIMITS = {
  maxTableEntries: 0x8000000,
  /** Bytes of bitmap data one bitmap may occupy (its table size times the cluster size). */
  maxPhysBytes: 0x20000000,
  minGranularityBits: 9,
  maxGranularityBits: 31,
  maxNameBytes: 1023,
} as const;

export interface BitmapDirectoryEntry {
  name: string;
  tableOffset: number;
  /** Entries in the bitmap table. */
  tableSize: number;
  flags: number;
  granularityBits: number;
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

/** Bytes of a directory entry with this name. */
export function directoryEntrySize(name: string): number {
  return align8(ENTRY_HEADER + Buffer.byteLength(name, 'utf8'));
}

/** Bitmap table entries a bitmap of this granularity needs to cover `virtualSize` bytes. */
export function bitmapTableSize(virtualSize: number, granularityBits: number, clusterSize: number): number {
  const bits = Math.ceil(virtualSize / 2 ** granularityBits);
  return Math.ceil(Math.ceil(bits / 8) / clusterSize);
}

/**
 * Whether an entry satisfies QEMU's constraints (check_dir_entry). A bitmap in use may have a
 * table too small for the image (it was not stored after a resize): it is unusable anyway.
 */
export function entryProblem(e: BitmapDirectoryEntry, clusterSize: number, virtualSize: number): boolean {
  const phys = e.tableSize * clusterSize;
  return (
    e.tableSize === 0 ||
    e.tableOffset === 0 ||
    e.tableOffset % clusterSize !== 0 ||
    e.tableOffset >= 2 ** 53 ||
    e.tableSize > BITMAP_LIMITS.maxTableEntries ||
    e.granularityBits > BITMAP_LIMITS.maxGranularityBits ||
    e.granularityBits < BITMAP_LIMITS.minGranularityBits ||
    (e.flags & RESERVED_FLAGS) !== 0 ||
    Buffer.byteLength(e.name, 'utf8') > BITMAP_LIMITS.maxNameBytes ||
    phys > BITMAP_LIMITS.maxPhysBytes ||
    ((e.flags & BITMAP_FLAG_IN_USE) === 0 && virtualSize > phys * 8 * 2 ** e.granularityBits)
  );
}

/**
 * Decodes a directory as QEMU's bitmap_list_load does; a string is the reason QEMU gives for
 * refusing it.
 */
export function decodeBitmapDirectory(
  dir: Buffer,
  nbBitmaps: number,
  clusterSize: number,
  virtualSize: number,
): BitmapDirectoryEntry[] | string {
  const out: BitmapDirectoryEntry[] = [];
  let pos = 0;
  while (pos < dir.length) {
    if (pos + ENTRY_HEADER > dir.length) return 'Broken bitmap directory';
    if (out.length + 1 > nbBitmaps) return 'More bitmaps found than specified in header extension';
    const tableHigh = dir.readUInt32BE(pos);
    const tableSize = dir.readUInt32BE(pos + 8);
    const flags = dir.readUInt32BE(pos + 12);
    const type = dir[pos + 16]!;
    const granularityBits = dir[pos + 17]!;
    const nameSize = dir.readUInt16BE(pos + 18);
    const extra = dir.readUInt32BE(pos + 20);
    const size = align8(ENTRY_HEADER + nameSize + extra);
    if (pos + size > dir.length) return 'Broken bitmap directory';
    if (extra !== 0) return 'Bitmap extra data is not supported';
    const name = dir.toString('utf8', pos + ENTRY_HEADER, pos + ENTRY_HEADER + nameSize);
    // Offsets past 2^53 (no file is that long) are refused below, before any arithmetic on them.
    const tableOffset = tableHigh > 0x1fffff ? 2 ** 53 : tableHigh * TWO_POW_32 + dir.readUInt32BE(pos + 4);
    const entry = { name, tableOffset, tableSize, flags, granularityBits };
    if (type !== TYPE_DIRTY_TRACKING || entryProblem(entry, clusterSize, virtualSize)) {
      return `Bitmap '${name}' doesn't satisfy the constraints`;
    }
    out.push(entry);
    pos += size;
  }
  if (out.length !== nbBitmaps) return 'Less bitmaps found than specified in header extension';
  return out;
}

/** Encodes a directory (no extra data), entries in the given order. */
export function encodeBitmapDirectory(entries: readonly BitmapDirectoryEntry[]): Buffer {
  const out = Buffer.alloc(entries.reduce((n, e) => n + directoryEntrySize(e.name), 0));
  let pos = 0;
  for (const e of entries) {
    out.writeUInt32BE(Math.floor(e.tableOffset / TWO_POW_32), pos);
    out.writeUInt32BE(e.tableOffset % TWO_POW_32, pos + 4);
    out.writeUInt32BE(e.tableSize, pos + 8);
    out.writeUInt32BE(e.flags >>> 0, pos + 12);
    out[pos + 16] = TYPE_DIRTY_TRACKING;
    out[pos + 17] = e.granularityBits;
    const nameSize = out.write(e.name, pos + ENTRY_HEADER, 'utf8');
    out.writeUInt16BE(nameSize, pos + 18);
    pos += directoryEntrySize(e.name);
  }
  return out;
}

export type BitmapTableEntry =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'data'; offset: number }
  /** Reserved bits set, or a misaligned offset: QEMU's check_table_entry refuses it. */
  | { kind: 'invalid'; high: number; low: number };

/** Decodes table entry `index` of `table`. */
export function decodeBitmapTableEntry(table: Buffer, index: number, clusterSize: number): BitmapTableEntry {
  const high = table.readUInt32BE(index * 8);
  const low = table.readUInt32BE(index * 8 + 4);
  const offHigh = high & 0xffffff;
  const offLow = (low & 0xfffffe00) >>> 0;
  const hasOffset = offHigh !== 0 || offLow !== 0;
  if ((high & 0xff000000) !== 0 || (low & 0x1fe) !== 0) return { kind: 'invalid', high, low };
  if (!hasOffset) return (low & 1) !== 0 ? { kind: 'ones' } : { kind: 'zeros' };
  if ((low & 1) !== 0 || offLow % clusterSize !== 0) return { kind: 'invalid', high, low };
  return { kind: 'data', offset: offHigh * TWO_POW_32 + offLow };
}

/** Encodes a table entry: a data cluster's offset, or 0 for a cluster of clear bits. */
export function encodeBitmapTableEntry(table: Buffer, index: number, offset: number): void {
  table.writeUInt32BE(Math.floor(offset / TWO_POW_32), index * 8);
  table.writeUInt32BE(offset % TWO_POW_32, index * 8 + 4);
}
