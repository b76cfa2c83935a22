/**
 * Wiring an open image: the one place that builds the parts, each with what it depends on, in
 * dependency order. Every part owns its own state from then on:
 *
 *   MetadataWriter  which host clusters hold which metadata (the overlap check), corruption
 *   HeaderStore     the header fields, among them where the L1 and refcount tables are
 *   Refcounts       the refcount table in memory and the refcount-block cache
 *   Allocator       where to look for free clusters, refcount-table growth
 *   L2Tables        the L1 table in memory and the L2-table cache
 *   Mapping, GuestReader, GuestWriter, HostClusters, Deallocator, Resizer, CompressedWriter:
 *                   the request paths, stateless over the owners above
 *   HostHoles       whether block status asks the host file for holes (decided once)
 *   SnapshotTable, SnapshotManager: the internal snapshots and their operations
 *   Qcow2Bitmaps    the persistent dirty bitmaps: tracked while open, stored on close
 *
 * The two locks are shared: the metadata lock serialises metadata changes; the cluster locks
 * hold guest clusters for the requests that use them.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { Mutex } from '../../../util/mutex.js';
import { RangeLock } from '../../../util/range-lock.js';
import type { BitmapDirectoryEntry } from '../codec/bitmap-directory.js';
import { INCOMPAT_CORRUPT } from '../codec/constants.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { Qcow2Header } from '../codec/header.js';
import type { BitmapsExtension } from '../codec/header-extensions.js';
import type { Qcow2Snapshot } from '../codec/snapshot-table.js';
import { SnapshotManager } from '../snapshot/manager.js';
import { SnapshotTable } from '../snapshot/table-store.js';
import { Allocator } from './allocator.js';
import { BlockStatus } from './block-status.js';
import type { ClusterCodec } from './cluster-codec.js';
import { CompressedWriter } from './compressed-writer.js';
import { Deallocator } from './deallocator.js';
import { GuestReader } from './guest-reader.js';
import { GuestWriter } from './guest-writer.js';
import { HeaderStore } from './header-store.js';
import { HostClusters } from './host-clusters.js';
import { HostHoles } from './host-holes.js';
import { Qcow2Image, type Qcow2ImageOptions } from './image.js';
import { L2Tables } from './l2-tables.js';
import { Mapping } from './mapping.js';
import { MetadataCache } from './metadata-cache.js';
import type { MetadataWriter } from './metadata-writer.js';
import { Qcow2Bitmaps } from './qcow2-bitmaps.js';
import { Refcounts } from './refcounts.js';
import { Resizer } from './resizer.js';

const DEFAULT_REFCOUNT_CACHE_TABLES = 16;

/** What opening read and checked: the image's tables as loaded, and the overlap map of them. */
export interface LoadedImage {
  file: BlockDriver;
  backing: BlockDriver | undefined;
  header: Qcow2Header;
  geometry: Qcow2Geometry;
  /** Every metadata structure of the image claimed already. */
  writer: MetadataWriter;
  /** The L1 table (l1_size entries). */
  l1: Buffer;
  /** Refcount-table entries: refcount block offsets (0 = none). */
  refcountTable: number[];
  /** L2 tables to keep cached. */
  l2CacheTables: number;
  /** How compressed clusters are coded. */
  codec: ClusterCodec;
  /** The snapshot table as loaded, and the bytes it takes in the file. */
  snapshots: Qcow2Snapshot[];
  snapshotTableBytes: number;
  /** The persistent bitmaps' extension and directory, checked. */
  bitmaps: { extension: BitmapsExtension | undefined; entries: BitmapDirectoryEntry[] };
  options: Qcow2ImageOptions;
}

export function assembleImage(loaded: LoadedImage): Qcow2Image {
  const { file, backing, geometry, writer, codec } = loaded;
  const hasBacking = backing !== undefined;
  const metadataLock = new Mutex();
  const clusterLocks = new RangeLock();

  const header = new HeaderStore(loaded.header, file, writer);
  const refcountCache = new MetadataCache(
    'refblock',
    file,
    writer,
    geometry.clusterSize,
    DEFAULT_REFCOUNT_CACHE_TABLES,
  );
  const l2Cache = new MetadataCache('l2', file, writer, geometry.clusterSize, loaded.l2CacheTables);
  // R1 (docs/architecture.md): an L2 table reaches the disk only after the refcounts of what it
  // names; lazy refcounts give that up, covered by the dirty bit (R7).
  if (!header.lazyRefcounts) l2Cache.dependOn(refcountCache);
  const refcounts = new Refcounts(refcountCache, geometry.clusterBits, geometry.refcountOrder, loaded.refcountTable);
  const allocator = new Allocator({ file, writer, refcounts, header, clusterBits: geometry.clusterBits });
  const tables = new L2Tables({ file, writer, cache: l2Cache, allocator, header, geometry }, loaded.l1);

  const mapping = new Mapping(tables, geometry, metadataLock);
  const reader = new GuestReader({ file, backing, geometry, codec, mapping, clusterLocks });
  const hostClusters = new HostClusters({ file, geometry, writer, tables, allocator });
  const guestWriter = new GuestWriter({
    file,
    geometry,
    writer,
    tables,
    allocator,
    mapping,
    reader,
    hostClusters,
    metadataLock,
    clusterLocks,
  });
  const deallocator = new Deallocator({ geometry, hasBacking, tables, hostClusters, metadataLock });
  const resizer = new Resizer({
    file,
    geometry,
    hasBacking,
    header,
    tables,
    allocator,
    refcounts,
    deallocator,
    metadataLock,
    clusterLocks,
  });
  const compressed = new CompressedWriter({
    file,
    geometry,
    codec,
    header,
    writer,
    tables,
    allocator,
    hostClusters,
    guestWriter,
    metadataLock,
    clusterLocks,
  });

  const holes = new HostHoles({ file, refcounts, clusterBits: geometry.clusterBits, metadataLock });
  const status = new BlockStatus({
    file,
    backing,
    geometry,
    tables,
    mapping,
    holes,
    size: () => header.header.size,
  });

  const snapshotTable = new SnapshotTable(
    { file, writer, header, allocator, clusterSize: geometry.clusterSize },
    loaded.snapshots,
    loaded.snapshotTableBytes,
  );
  const snapshots = new SnapshotManager({
    file,
    geometry,
    header,
    tables,
    refcounts,
    allocator,
    writer,
    table: snapshotTable,
    metadataLock,
    fileLength: () => file.length(),
    beforeChange: () => image.beforeChange(),
  });
  const bitmaps = new Qcow2Bitmaps(
    {
      file,
      writer,
      allocator,
      header,
      readOnly: loaded.options.readOnly,
      clusterSize: geometry.clusterSize,
      size: () => header.header.size,
    },
    loaded.bitmaps.extension,
    loaded.bitmaps.entries,
  );

  writer.onCorruption = async () => {
    await header.setIncompatible(INCOMPAT_CORRUPT, true).catch(() => {});
  };
  const image: Qcow2Image = new Qcow2Image(
    {
      file,
      backing,
      geometry,
      header,
      tables,
      refcounts,
      status,
      reader,
      writer: guestWriter,
      deallocator,
      resizer,
      compressed,
      snapshots,
      bitmaps,
      metadataLock,
      clusterLocks,
    },
    loaded.options,
  );
  return image;
}
