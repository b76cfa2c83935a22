/**
 * Reading and writing the persistent bitmaps' structures in the image file: the directory, the
 * bitmap tables and the clusters of bitmap data. Everything read is hostile until checked: the
 * directory as QEMU's bitmap_list_load checks it, each table entry as check_table_entry does,
 * and the tables together may not add up to more bytes than the file holds.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import {
  BITMAP_FLAG_IN_USE,
  type BitmapDirectoryEntry,
  bitmapTableSize,
  decodeBitmapDirectory,
  decodeBitmapTableEntry,
  encodeBitmapDirectory,
  encodeBitmapTableEntry,
} from '../codec/bitmap-directory.js';
import type { BitmapsExtension } from '../codec/header-extensions.js';
import type { Allocator } from './allocator.js';
import type { ChunkSource, DirtyBitmap } from './dirty-bitmap.js';
import { isZero } from './dirty-bitmap.js';
import type { MetadataWriter } from './metadata-writer.js';
import { readInFile } from './read-in-file.js';

/** Table entries read at a time. */
const TABLE_PIECE_ENTRIES = 1 << 17;

function corrupt(message: string): VdiskError {
  return new VdiskError('ECORRUPT', message);
}

/** Reads and checks the directory the extension names; refuses what QEMU refuses to open. */
export async function loadBitmapDirectory(
  file: BlockDriver,
  ext: BitmapsExtension,
  clusterSize: number,
  virtualSize: number,
): Promise<BitmapDirectoryEntry[]> {
  if (ext.directorySize === 0) throw corrupt('Requested bitmap directory size is zero');
  if (ext.directoryOffset + ext.directorySize > file.length()) {
    throw corrupt('The bitmap directory lies past the end of the file');
  }
  const dir = Buffer.alloc(ext.directorySize);
  await file.read(ext.directoryOffset, dir);
  const entries = decodeBitmapDirectory(dir, ext.nbBitmaps, clusterSize, virtualSize);
  if (typeof entries === 'string') throw corrupt(entries);
  return entries;
}

/**
 * Checks every table as QEMU does when it loads the bitmaps (a bitmap in use is not loaded, so
 * its table is not checked), and reports each table and data cluster to `claim`.
 */
export async function checkBitmapTables(
  file: BlockDriver,
  entries: readonly BitmapDirectoryEntry[],
  clusterSize: number,
  virtualSize: number,
  claim: (offset: number, length: number) => void,
): Promise<void> {
  // What lies past the end of the file reads as zeros (clear chunks): only the rest is read,
  // and all of it together may not be more than the file holds.
  const inFile = (e: BitmapDirectoryEntry) => Math.max(0, Math.min(e.tableSize * 8, file.length() - e.tableOffset));
  if (entries.reduce((n, e) => n + inFile(e), 0) > file.length()) {
    throw corrupt('The bitmap tables add up to more than the image file holds');
  }
  for (const e of entries) {
    const inUse = (e.flags & BITMAP_FLAG_IN_USE) !== 0;
    if (!inUse && e.tableSize !== bitmapTableSize(virtualSize, e.granularityBits, clusterSize)) {
      throw corrupt(`Could not read bitmap '${e.name}' from image: its table has the wrong size`);
    }
    claim(e.tableOffset, e.tableSize * 8);
    await forEachTableEntry(file, e, clusterSize, (entry) => {
      if (entry.kind === 'invalid') {
        if (inUse) return;
        throw corrupt(`Could not read bitmap_table table from image for bitmap '${e.name}': invalid entry`);
      }
      if (entry.kind === 'data') claim(entry.offset, clusterSize);
    });
  }
}

type TableEntry = ReturnType<typeof decodeBitmapTableEntry>;

/** Calls `visit` with each entry of the bitmap's table that lies in the file, read in pieces. */
async function forEachTableEntry(
  file: BlockDriver,
  e: Pick<BitmapDirectoryEntry, 'tableOffset' | 'tableSize'>,
  clusterSize: number,
  visit: (entry: TableEntry, index: number) => void | Promise<void>,
): Promise<void> {
  // Entries past the end of the file read as zeros: nothing to visit there.
  const entries = Math.min(e.tableSize, Math.max(0, Math.ceil((file.length() - e.tableOffset) / 8)));
  const piece = Buffer.alloc(Math.min(entries, TABLE_PIECE_ENTRIES) * 8);
  for (let first = 0; first < entries; first += TABLE_PIECE_ENTRIES) {
    const count = Math.min(TABLE_PIECE_ENTRIES, entries - first);
    const buf = piece.subarray(0, count * 8);
    await readInFile(file, e.tableOffset + first * 8, buf);
    for (let j = 0; j < count; j++) {
      const pending = visit(decodeBitmapTableEntry(buf, j, clusterSize), first + j);
      if (pending) await pending;
    }
  }
}

/** The stored chunks of a bitmap whose table was checked at open; chunks past its table are clear. */
export function storedChunks(
  file: BlockDriver,
  e: Pick<BitmapDirectoryEntry, 'tableOffset' | 'tableSize'>,
  clusterSize: number,
): ChunkSource {
  return async (index) => {
    if (index >= e.tableSize) return 'zeros';
    const raw = Buffer.alloc(8);
    await readInFile(file, e.tableOffset + index * 8, raw);
    const entry = decodeBitmapTableEntry(raw, 0, clusterSize);
    if (entry.kind === 'zeros' || entry.kind === 'ones') return entry.kind;
    if (entry.kind === 'invalid') throw corrupt('Invalid bitmap table entry');
    const data = Buffer.alloc(clusterSize);
    await readInFile(file, entry.offset, data);
    return data;
  };
}

/** What storing needs of the open image. */
export interface BitmapStoreDeps {
  file: BlockDriver;
  writer: MetadataWriter;
  allocator: Allocator;
  clusterSize: number;
}

/**
 * Writes a bitmap's data into new clusters (a clear chunk gets no cluster) and a new table
 * naming them, as QEMU's store_bitmap does. Returns where the table is.
 */
export async function storeBitmapData(
  deps: BitmapStoreDeps,
  bitmap: DirtyBitmap,
): Promise<{ tableOffset: number; tableSize: number }> {
  const { allocator, writer, clusterSize } = deps;
  const tableSize = bitmap.chunkCount;
  const table = Buffer.alloc(tableSize * 8);
  for (let i = 0; i < tableSize; i++) {
    const chunk = await bitmap.chunk(i);
    if (chunk === 'zeros' || isZero(chunk)) continue;
    const offset = await allocator.allocate(1);
    writer.claim('bitmap', offset, clusterSize);
    await writer.writeTable('bitmap', offset, chunk);
    encodeBitmapTableEntry(table, i, offset);
  }
  const clusters = Math.ceil(table.length / clusterSize);
  const tableOffset = await allocator.allocate(clusters);
  writer.claim('bitmap', tableOffset, clusters * clusterSize);
  await writer.writeTable('bitmap', tableOffset, table);
  return { tableOffset, tableSize };
}

/** Frees a stored bitmap's table and data clusters (after the directory stopped naming them). */
export async function freeBitmapClusters(
  deps: BitmapStoreDeps,
  e: Pick<BitmapDirectoryEntry, 'tableOffset' | 'tableSize'>,
): Promise<void> {
  const { allocator, writer, clusterSize, file } = deps;
  await forEachTableEntry(file, e, clusterSize, async (entry) => {
    if (entry.kind !== 'data') return;
    writer.release('bitmap', entry.offset, clusterSize);
    await allocator.free(entry.offset, 1);
  });
  const clusters = Math.ceil((e.tableSize * 8) / clusterSize);
  writer.release('bitmap', e.tableOffset, clusters * clusterSize);
  await allocator.free(e.tableOffset, clusters);
}

/** Writes a directory into new clusters; returns the extension that names it. */
export async function writeBitmapDirectory(
  deps: BitmapStoreDeps,
  entries: readonly BitmapDirectoryEntry[],
): Promise<BitmapsExtension> {
  const dir = encodeBitmapDirectory(entries);
  const clusters = Math.ceil(dir.length / deps.clusterSize);
  const offset = await deps.allocator.allocate(clusters);
  deps.writer.claim('bitmap-directory', offset, dir.length);
  await deps.writer.writeTable('bitmap-directory', offset, dir);
  return { nbBitmaps: entries.length, directorySize: dir.length, directoryOffset: offset };
}
