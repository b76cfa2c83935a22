/** The parts of an open qcow2 image, wired once by open.ts and shared by the request paths. */
import type { BlockDriver } from '../../../block/driver.js';
import { Mutex } from '../../../util/mutex.js';
import { RangeLock } from '../../../util/range-lock.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { Allocator } from './allocator.js';
import type { HeaderStore } from './header-store.js';
import type { L2Tables } from './l2-tables.js';
import type { MetadataCache } from './metadata-cache.js';
import type { MetadataWriter } from './metadata-writer.js';
import type { Refcounts } from './refcounts.js';

export interface ImageParts {
  file: BlockDriver;
  backing: BlockDriver | undefined;
  geometry: Qcow2Geometry;
  header: HeaderStore;
  writer: MetadataWriter;
  l2Cache: MetadataCache;
  refcountCache: MetadataCache;
  refcounts: Refcounts;
  allocator: Allocator;
  tables: L2Tables;
  lazyRefcounts: boolean;
  /** Metadata changes (lookups that may load tables, allocation, entry updates) run one at a time. */
  metadataLock: Mutex;
  /** Guest clusters in use by requests: shared for reads and in-place writes, exclusive for remapping. */
  clusterLocks: RangeLock;
}

export function newLocks(): Pick<ImageParts, 'metadataLock' | 'clusterLocks'> {
  return { metadataLock: new Mutex(), clusterLocks: new RangeLock() };
}
