/**
 * Writing one whole guest cluster compressed (qemu-img convert -c) in the image's compression
 * type, packed into host clusters byte by byte. A cluster that does not shrink is written
 * normally instead, as QEMU does.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { Mutex } from '../../../util/mutex.js';
import type { RangeLock } from '../../../util/range-lock.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import { compressedSectors, type L2Entry } from '../codec/l2-entry.js';
import type { Allocator } from './allocator.js';
import type { ClusterCodec } from './cluster-codec.js';
import type { GuestWriter } from './guest-writer.js';
import type { HeaderStore } from './header-store.js';
import type { HostClusters } from './host-clusters.js';
import type { L2Tables } from './l2-tables.js';
import type { MetadataWriter } from './metadata-writer.js';

export interface CompressedWriterDeps {
  file: BlockDriver;
  geometry: Qcow2Geometry;
  codec: ClusterCodec;
  header: HeaderStore;
  writer: MetadataWriter;
  tables: L2Tables;
  allocator: Allocator;
  hostClusters: HostClusters;
  /** For clusters that do not shrink. */
  guestWriter: GuestWriter;
  metadataLock: Mutex;
  clusterLocks: RangeLock;
}

export class CompressedWriter {
  readonly #d: CompressedWriterDeps;

  constructor(deps: CompressedWriterDeps) {
    this.#d = deps;
  }

  /**
   * Writes `data` compressed; an empty `data` ends a run of compressed writes instead, and rounds
   * the file up to a whole sector as QEMU does (qemu-img convert -c ends so).
   */
  async write(offset: number, data: Buffer): Promise<void> {
    if (data.length === 0) {
      await this.#alignFileEnd();
      return;
    }
    const { file, geometry: g, writer, tables, allocator, hostClusters, metadataLock } = this.#d;
    const size = this.#d.header.header.size;
    if (offset % g.clusterSize !== 0 || (data.length !== g.clusterSize && offset + data.length !== size)) {
      throw new VdiskError('EINVAL', 'Compressed writes must cover exactly one whole cluster');
    }
    const plain =
      data.length === g.clusterSize ? data : Buffer.concat([data, Buffer.alloc(g.clusterSize - data.length)]);
    const packed = this.#d.codec.compress(plain);
    // Nothing saved: QEMU writes such a cluster uncompressed too.
    if (packed === null) {
      await this.#d.guestWriter.write(offset, data);
      return;
    }
    const cluster = offset / g.clusterSize;
    const release = await this.#d.clusterLocks.acquire(cluster, cluster + 1, 'exclusive');
    try {
      await hostClusters.check(await metadataLock.run(() => tables.entries(cluster, 1)));
      // The L2 table first, then the bytes, as QEMU allocates them: the layouts stay alike.
      const host = await metadataLock.run(async () => {
        await tables.prepareTable(cluster);
        return allocator.allocateBytes(packed.length);
      });
      await writer.check('data', host, packed.length);
      await file.write(host, packed);
      await metadataLock.run(async () => {
        // R3 (docs/architecture.md): the compressed bytes are durable before the L2 entry names them.
        tables.dependOnDataWrites();
        const [old] = await tables.entries(cluster, 1);
        const entry: L2Entry = {
          kind: 'compressed',
          host,
          sectors: compressedSectors(host, packed.length),
          length: packed.length,
        };
        await tables.setEntries(cluster, [entry]);
        if (old && old.kind !== 'unallocated') await hostClusters.release([old]);
      });
    } finally {
      release();
    }
  }

  async #alignFileEnd(): Promise<void> {
    const file = this.#d.file;
    await this.#d.metadataLock.run(async () => {
      const length = file.length();
      const aligned = Math.ceil(length / 512) * 512;
      if (aligned !== length) await file.truncate(aligned, 'off');
    });
  }
}
