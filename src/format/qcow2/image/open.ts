/**
 * Opening a qcow2 image: read and validate the header and its extensions, load the L1 and
 * refcount tables, claim every metadata structure for the overlap check (bitmaps included), open the backing image
 * through the open policy, then hand it all to assembleImage.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { OpenContext } from '../../format.js';
import { checkQcow2 } from '../check/check.js';
import type { BitmapDirectoryEntry } from '../codec/bitmap-directory.js';
import { INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY } from '../codec/constants.js';
import { geometryOf } from '../codec/geometry.js';
import { decodeHeader } from '../codec/header.js';
import { decodeHeaderExtensions } from '../codec/header-extensions.js';
import { l2OffsetAt } from '../codec/l1-entry.js';
import { decodeReftableEntry } from '../codec/refcount-block.js';
import { assembleImage } from './assemble.js';
import { checkBitmapTables, loadBitmapDirectory } from './bitmap-storage.js';
import { clusterCodec } from './cluster-codec.js';
import type { Qcow2Image } from './image.js';
import { MetadataWriter } from './metadata-writer.js';
import { readInFile } from './read-in-file.js';
import { claimSnapshotL2Tables, loadSnapshots, snapshotView } from './snapshots.js';

/** QEMU's default L2 cache: enough for 32 MiB of L2 tables or the whole image, whichever is less. */
const DEFAULT_L2_CACHE_BYTES = 32 * 1024 * 1024;

export interface Qcow2OpenOptions {
  /** Bytes of L2 tables to keep cached (QEMU's l2-cache-size). */
  l2CacheSize?: number;
}

export async function openQcow2(
  file: BlockDriver,
  context: OpenContext,
  options: Qcow2OpenOptions = {},
  repairedDirty = false,
): Promise<Qcow2Image> {
  const fileLength = file.length();
  // The cluster size is in the first bytes; the header proper fills cluster 0.
  const head = Buffer.alloc(Math.min(fileLength, 4096));
  await file.read(0, head);
  const first = decodeHeader(head);
  const clusterSize = 2 ** first.clusterBits;
  const cluster0 = Buffer.alloc(clusterSize);
  await file.read(0, cluster0.subarray(0, Math.min(clusterSize, fileLength)));
  const header = decodeHeader(cluster0);
  const extensions = decodeHeaderExtensions(cluster0, header);
  const name = context.filename ?? 'image';

  const codec = clusterCodec(header.compressionType, clusterSize, context.zstd);
  if (header.incompatibleFeatures & INCOMPAT_DATA_FILE) {
    throw new VdiskError('ENOTSUP', `'${name}' keeps its data in an external data file, which vdisk does not support`);
  }
  const readOnly = context.readOnly || file.readOnly;
  if (!readOnly && header.incompatibleFeatures & INCOMPAT_CORRUPT) {
    throw new VdiskError('ECORRUPT', `'${name}' is marked corrupt; it can only be opened read-only until repaired`);
  }
  if (!readOnly && header.incompatibleFeatures & INCOMPAT_DIRTY) {
    // Not closed cleanly with lazy refcounts: repair as QEMU does on open (check -r all), then open anew.
    if (repairedDirty) throw new VdiskError('EIO', `Could not repair dirty image '${name}'`);
    const result = await checkQcow2(file, { repair: 'all' });
    const failure =
      result.failure ?? (result.checkErrors + result.corruptions > 0 ? 'errors remain after the repair' : undefined);
    if (failure !== undefined) throw new VdiskError('EIO', `Could not repair dirty image '${name}': ${failure}`);
    return openQcow2(file, context, options, true);
  }
  const g = geometryOf(header);
  if (header.size > header.l1Size * g.l2Coverage) {
    throw new VdiskError('ECORRUPT', `The L1 table of '${name}' is too small for its virtual size`);
  }
  const { snapshots, size: snapshotTableBytes } = await loadSnapshots(file, header);
  // At a snapshot, its L1 table stands in for the active one (read-only, the size unchanged, as QEMU).
  const view = context.snapshot ? snapshotView(snapshots, context.snapshot, header, readOnly) : header;

  const l1 = Buffer.alloc(view.l1Size * 8);
  // A table cut off by a truncated file reads as zeros past the end, as QEMU reads it.
  await readInFile(file, view.l1TableOffset, l1);

  const reftableBytes = header.refcountTableClusters * clusterSize;
  const reftable = Buffer.alloc(reftableBytes);
  await readInFile(file, header.refcountTableOffset, reftable);
  const table: number[] = [];
  for (let i = 0; i < reftableBytes / 8; i++) table.push(decodeReftableEntry(reftable, i, clusterSize));

  const writer = new MetadataWriter(file, header.clusterBits);
  writer.claim('header', 0, clusterSize);
  writer.claim('l1', view.l1TableOffset, l1.length);
  writer.claim('refcount-table', header.refcountTableOffset, reftableBytes);
  for (const block of table) if (block !== 0) writer.claim('refblock', block, clusterSize);
  if (snapshots.length > 0) writer.claim('snapshot-table', header.snapshotsOffset, snapshotTableBytes);
  for (const s of snapshots) writer.claim('snapshot-l1', s.l1TableOffset, s.l1Size * 8);
  // Only a writable image allocates clusters, and so needs to know the snapshots' own L2 tables.
  if (!readOnly) await claimSnapshotL2Tables(file, writer, snapshots, g);
  // The bitmaps' directory, tables and data clusters are claimed like every other table.
  let bitmapEntries: BitmapDirectoryEntry[] = [];
  if (extensions.bitmaps) {
    writer.claim('bitmap-directory', extensions.bitmaps.directoryOffset, extensions.bitmaps.directorySize);
    bitmapEntries = await loadBitmapDirectory(file, extensions.bitmaps, clusterSize, header.size);
    await checkBitmapTables(file, bitmapEntries, clusterSize, header.size, (offset, length) =>
      writer.claim('bitmap', offset, length),
    );
  }
  // Every L2 table of the active L1 is metadata the overlap check protects.
  for (let i = 0; i < view.l1Size; i++) {
    const l2 = l2OffsetAt(l1, i, g);
    if (l2 !== 0) writer.claim('l2', l2, clusterSize);
  }

  let backing: BlockDriver | undefined;
  // Without openBacking the caller asked for this layer alone (info): unallocated reads as zeros.
  if (extensions.backingFile && context.openBacking) {
    backing = await context.openBacking(
      extensions.backingFile,
      extensions.backingFormat as 'raw' | 'qcow2' | undefined,
    );
  }

  const l2CacheTables = Math.max(
    4,
    Math.floor((options.l2CacheSize ?? Math.min(DEFAULT_L2_CACHE_BYTES, header.l1Size * clusterSize)) / clusterSize),
  );
  return assembleImage({
    file,
    backing,
    header: view,
    geometry: g,
    writer,
    l1,
    snapshots,
    snapshotTableBytes,
    refcountTable: table,
    l2CacheTables,
    codec,
    bitmaps: { extension: extensions.bitmaps, entries: bitmapEntries },
    options: {
      readOnly,
      backingName: extensions.backingFile,
      backingFormat: extensions.backingFormat,
    },
  });
}
