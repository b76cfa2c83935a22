/**
 * Every write of qcow2 metadata, and every data write, passes an overlap check first (R8 in
 * docs/architecture.md): a write that would land on metadata of another kind is refused with
 * EIO, and the image is marked corrupt, instead of destroying the image. The map of which host
 * cluster holds which metadata is kept up to date by the allocator and the table owners.
 *
 * A cluster may be claimed by several kinds at once (a hostile image can point two tables at
 * the same cluster); a write is allowed only where its own kind is the only claim, so one
 * claim never hides another. Once corruption is found, every later write is refused: the
 * image's metadata can no longer be trusted to say where anything may go.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';

export type MetadataKind =
  | 'header'
  | 'l1'
  | 'l2'
  | 'refcount-table'
  | 'refblock'
  | 'snapshot-table'
  | 'snapshot-l1'
  | 'snapshot-l2'
  | 'bitmap-directory'
  /** A bitmap table or a cluster of bitmap data. */
  | 'bitmap'
  | 'other';

const KIND_BITS: Record<MetadataKind, number> = {
  header: 1,
  l1: 2,
  l2: 4,
  'refcount-table': 8,
  refblock: 16,
  'snapshot-table': 32,
  'snapshot-l1': 64,
  'bitmap-directory': 128,
  other: 256,
  'snapshot-l2': 512,
  bitmap: 1024,
};

function kindsIn(bits: number): MetadataKind[] {
  return (Object.keys(KIND_BITS) as MetadataKind[]).filter((k) => bits & KIND_BITS[k]);
}

export class MetadataWriter {
  readonly #file: BlockDriver;
  readonly #clusterBits: number;
  /** Host cluster index -> the KIND_BITS of every structure that lives there. */
  readonly #claims = new Map<number, number>();
  /** Why the image was found corrupt, once it was. */
  #corruption: string | undefined;
  /** True while the corrupt bit itself is being written. */
  #reporting = false;
  /** Called once when corruption is found, to set the corrupt bit in the header. */
  onCorruption: ((message: string) => Promise<void>) | undefined;

  constructor(file: BlockDriver, clusterBits: number) {
    this.#file = file;
    this.#clusterBits = clusterBits;
  }

  /** Why the image was found corrupt while open, if it was. */
  get corruption(): string | undefined {
    return this.#corruption;
  }

  /** Records that the clusters under [offset, offset+length) hold metadata of `kind`. */
  claim(kind: MetadataKind, offset: number, length: number): void {
    const bit = KIND_BITS[kind];
    for (const cluster of this.#clusters(offset, length)) {
      this.#claims.set(cluster, (this.#claims.get(cluster) ?? 0) | bit);
    }
  }

  /** Records that clusters no longer hold metadata of `kind` (freed, or turned into data). */
  release(kind: MetadataKind, offset: number, length: number): void {
    const bit = KIND_BITS[kind];
    for (const cluster of this.#clusters(offset, length)) {
      const left = (this.#claims.get(cluster) ?? 0) & ~bit;
      if (left === 0) this.#claims.delete(cluster);
      else this.#claims.set(cluster, left);
    }
  }

  /** The metadata kinds that live in the cluster holding `offset`. */
  kindsAt(offset: number): MetadataKind[] {
    return kindsIn(this.#claims.get(Math.floor(offset / 2 ** this.#clusterBits)) ?? 0);
  }

  /** Writes a metadata table of `kind` at `offset`, refusing to touch other metadata. */
  async writeTable(kind: MetadataKind, offset: number, data: Buffer): Promise<void> {
    if (!(this.#reporting && kind === 'header')) await this.check(kind, offset, data.length);
    await this.#file.write(offset, data);
  }

  /** Whether a write of `kind` to [offset, offset+length) would be refused (check() would throw). */
  blocked(kind: MetadataKind | 'data', offset: number, length: number): boolean {
    return this.#corruption !== undefined || this.#foreign(kind, offset, length) !== undefined;
  }

  /** Throws (and marks the image corrupt) if [offset, offset+length) holds metadata other than `kind`. */
  async check(kind: MetadataKind | 'data', offset: number, length: number): Promise<void> {
    if (this.#corruption !== undefined) throw this.#refusal();
    const found = this.#foreign(kind, offset, length);
    if (found !== undefined) {
      await this.reportCorruption(
        `Preventing invalid write on metadata (overlaps with ${found}); ` +
          `write of ${kind} at offset 0x${offset.toString(16)}, length ${length}`,
      );
    }
  }

  /**
   * Throws (and marks the image corrupt) if clusters the refcounts call free hold the image's
   * own metadata: allocating them would write over it.
   */
  async checkFree(offset: number, length: number): Promise<void> {
    if (this.#corruption !== undefined) throw this.#refusal();
    for (const cluster of this.#clusters(offset, length)) {
      const bits = this.#claims.get(cluster);
      if (bits !== undefined) {
        const host = cluster * 2 ** this.#clusterBits;
        await this.reportCorruption(
          `Cluster 0x${host.toString(16)} is free according to its refcount but holds ${kindsIn(bits).join(', ')}`,
        );
      }
    }
  }

  /** Marks the image corrupt (once), refuses every later write, and throws EIO with `message`. */
  async reportCorruption(message: string): Promise<never> {
    if (this.#corruption === undefined) {
      this.#corruption = message;
      const report = this.onCorruption;
      this.onCorruption = undefined;
      this.#reporting = true;
      try {
        await report?.(message);
      } finally {
        this.#reporting = false;
      }
    }
    throw new VdiskError('EIO', message);
  }

  #refusal(): VdiskError {
    return new VdiskError('EIO', `The image was found corrupt and is not written to: ${this.#corruption}`);
  }

  /** The first metadata kind other than `kind` under the range, if any. */
  #foreign(kind: MetadataKind | 'data', offset: number, length: number): MetadataKind | undefined {
    if (this.#claims.size === 0) return undefined;
    const own = kind === 'data' ? 0 : KIND_BITS[kind];
    for (const cluster of this.#clusters(offset, length)) {
      const bits = this.#claims.get(cluster);
      if (bits !== undefined && (bits & ~own) !== 0) return kindsIn(bits & ~own)[0];
    }
    return undefined;
  }

  *#clusters(offset: number, length: number): Generator<number> {
    const first = Math.floor(offset / 2 ** this.#clusterBits);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / 2 ** this.#clusterBits);
    for (let c = first; c <= last; c++) yield c;
  }
}
