/**
 * Reading guest bytes: one host read per contiguous data run, zeros, backing data, or inflated
 * clusters. The reads of stored content (host data, backing data, compressed clusters) also
 * serve the write path's copy-on-write.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { RangeLock } from '../../../util/range-lock.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { L2Entry } from '../codec/l2-entry.js';
import type { ClusterCodec } from './cluster-codec.js';
import type { Mapping, Run } from './mapping.js';
import { readInFile } from './read-in-file.js';

export interface GuestReaderDeps {
  file: BlockDriver;
  backing: BlockDriver | undefined;
  geometry: Qcow2Geometry;
  codec: ClusterCodec;
  mapping: Mapping;
  clusterLocks: RangeLock;
}

export class GuestReader {
  readonly #d: GuestReaderDeps;

  constructor(deps: GuestReaderDeps) {
    this.#d = deps;
  }

  get hasBacking(): boolean {
    return this.#d.backing !== undefined;
  }

  /** Fills `buf` with the guest bytes at `offset`, holding its clusters shared meanwhile. */
  async read(offset: number, buf: Buffer): Promise<void> {
    const g = this.#d.geometry;
    const first = Math.floor(offset / g.clusterSize);
    const end = Math.ceil((offset + buf.length) / g.clusterSize);
    const locks = this.#d.clusterLocks;
    const release = locks.tryAcquire(first, end, 'shared') ?? (await locks.acquire(first, end, 'shared'));
    try {
      // Mappings in cached tables need no lock: the clusters are held, and the lookup ends
      // before anything else runs. Only loading a table waits for the metadata lock.
      const runs = this.#d.mapping.cached(offset, buf.length) ?? (await this.#d.mapping.lookup(offset, buf.length));
      if (runs.length === 1) return await this.#readRun(runs[0]!, buf);
      await Promise.all(
        runs.map((run) => this.#readRun(run, buf.subarray(run.offset - offset, run.offset - offset + run.length))),
      );
    } finally {
      release();
    }
  }

  async #readRun(run: Run, out: Buffer): Promise<void> {
    switch (run.kind) {
      case 'data':
        await this.readHost(run.host, out);
        return;
      case 'zero':
        out.fill(0);
        return;
      case 'unallocated':
        await this.readBacking(run.offset, out);
        return;
      case 'compressed': {
        const cluster = await this.readCompressed(run.entry!);
        const start = run.offset % this.#d.geometry.clusterSize;
        cluster.copy(out, 0, start, start + out.length);
        return;
      }
    }
  }

  /**
   * Reads host bytes of a data cluster. The part past the end of the file reads as zeros, as
   * QEMU reads it, without asking the file for bytes it does not have (an entry pointing past
   * the end is a corruption check reports; reading must not fail or go outside the file).
   */
  readHost(host: number, out: Buffer): Promise<void> {
    return readInFile(this.#d.file, host, out);
  }

  /** Reads what the backing image has at `offset`; zeros past its end or without one. */
  async readBacking(offset: number, out: Buffer): Promise<void> {
    const backing = this.#d.backing;
    const inBacking = backing ? Math.max(0, Math.min(out.length, backing.length() - offset)) : 0;
    if (inBacking > 0) await backing!.read(offset, out.subarray(0, inBacking));
    out.fill(0, inBacking);
  }

  /** The whole guest cluster a compressed entry describes. */
  async readCompressed(entry: L2Entry): Promise<Buffer> {
    if (entry.kind !== 'compressed') throw new VdiskError('EIO', 'Not a compressed cluster');
    const available = Math.min(entry.length, this.#d.file.length() - entry.host);
    if (available <= 0) {
      throw new VdiskError(
        'ECORRUPT',
        `Compressed cluster at 0x${entry.host.toString(16)} lies past the end of the file`,
      );
    }
    const compressed = Buffer.allocUnsafe(available);
    await this.#d.file.read(entry.host, compressed);
    try {
      return await this.#d.codec.decompress(compressed);
    } catch (err) {
      const reason = err instanceof VdiskError ? err.message : 'does not decompress';
      throw new VdiskError('ECORRUPT', `Compressed cluster at 0x${entry.host.toString(16)} ${reason}`, { cause: err });
    }
  }
}
