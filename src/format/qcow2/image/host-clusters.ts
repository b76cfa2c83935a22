/**
 * The host clusters L2 entries name, seen from the entries' side: refusing entries that name the
 * image's own metadata before anything changes, and giving clusters back once no entry names
 * them (after the cleared entries are durable, R4 in docs/architecture.md).
 */
import type { BlockDriver } from '../../../block/driver.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { L2Entry } from '../codec/l2-entry.js';
import type { Allocator } from './allocator.js';
import type { L2Tables } from './l2-tables.js';
import type { MetadataWriter } from './metadata-writer.js';

export interface HostClustersDeps {
  file: BlockDriver;
  geometry: Qcow2Geometry;
  writer: MetadataWriter;
  tables: L2Tables;
  allocator: Allocator;
}

export class HostClusters {
  readonly #d: HostClustersDeps;

  constructor(deps: HostClustersDeps) {
    this.#d = deps;
  }

  /**
   * Refuses (marking the image corrupt) entries whose host clusters hold the image's metadata:
   * rewriting, freeing or punching them would destroy a table. Called before anything changes.
   */
  async check(entries: L2Entry[]): Promise<void> {
    const cs = this.#d.geometry.clusterSize;
    for (const entry of entries) {
      if ((entry.kind === 'data' || entry.kind === 'zero') && entry.host !== 0) {
        await this.#d.writer.check('data', entry.host, cs);
      } else if (entry.kind === 'compressed') {
        await this.#d.writer.check('data', entry.host, entry.length);
      }
    }
  }

  /**
   * Drops this image's references to the host clusters of entries no L2 entry names any more.
   * The cleared entries are durable first (R4), then the refcounts drop, then the space is
   * given back. Runs under the metadata lock.
   */
  async release(entries: L2Entry[]): Promise<void> {
    await this.check(entries);
    await this.#d.tables.flush();
    const g = this.#d.geometry;
    const allocator = this.#d.allocator;
    const holes: number[] = [];
    for (const entry of entries) {
      if (entry.kind === 'data' || entry.kind === 'zero') {
        if (entry.host === 0) continue;
        await allocator.free(entry.host, 1);
        if (entry.copied) holes.push(entry.host);
      } else if (entry.kind === 'compressed') {
        // Its host cluster may be the one compressed writes are packing into.
        allocator.resetCompressedPacking();
        const firstCluster = Math.floor(entry.host / g.clusterSize);
        const lastCluster = Math.floor((entry.host + entry.length - 1) / g.clusterSize);
        await allocator.free(firstCluster * g.clusterSize, lastCluster - firstCluster + 1);
        // A cluster no compressed stream uses any more is punched, as QEMU discards it.
        for (let c = firstCluster; c <= lastCluster; c++) {
          if ((await allocator.refcountOf(c * g.clusterSize)) === 0) holes.push(c * g.clusterSize);
        }
      }
    }
    await Promise.all(holes.map((host) => this.#d.file.discard(host, g.clusterSize)));
  }
}
