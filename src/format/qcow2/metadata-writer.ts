/**
 * Every write of qcow2 metadata, and every data write, passes an overlap check first (rule R8):
 * a write that would land on metadata of another kind is refused with EIO, and the image is
 * marked corrupt, instead of destroying the image. The map of which host cluster holds which
 * metadata is kept up to date by the allocator and the table owners.
 */
import type { BlockDriver } from '../../block/driver.js';
import { VdiskError } from '../../block/errors.js';

export type MetadataKind =
  | 'header'
  | 'l1'
  | 'l2'
  | 'refcount-table'
  | 'refblock'
  | 'snapshot-table'
  | 'snapshot-l1'
  | 'other';

export class MetadataWriter {
  readonly #file: BlockDriver;
  readonly #clusterBits: number;
  readonly #kinds = new Map<number, MetadataKind>();
  /** Called once when an overlap is detected, to set the corrupt bit. */
  onCorruption: ((message: string) => Promise<void>) | undefined;

  constructor(file: BlockDriver, clusterBits: number) {
    this.#file = file;
    this.#clusterBits = clusterBits;
  }

  /** Records that `count` clusters at host `offset` hold metadata of `kind`. */
  claim(kind: MetadataKind, offset: number, length: number): void {
    for (const cluster of this.#clusters(offset, length)) this.#kinds.set(cluster, kind);
  }

  /** Records that clusters no longer hold metadata (freed, or turned into data). */
  release(offset: number, length: number): void {
    for (const cluster of this.#clusters(offset, length)) this.#kinds.delete(cluster);
  }

  kindAt(offset: number): MetadataKind | undefined {
    return this.#kinds.get(Math.floor(offset / 2 ** this.#clusterBits));
  }

  /** Writes a metadata table of `kind` at `offset`, refusing to touch other metadata. */
  async writeTable(kind: MetadataKind, offset: number, data: Buffer): Promise<void> {
    await this.check(kind, offset, data.length);
    await this.#file.write(offset, data);
  }

  /** The metadata other than `kind` that [offset, offset+length) overlaps, if any. */
  overlapping(kind: MetadataKind | 'data', offset: number, length: number): MetadataKind | undefined {
    const size = 2 ** this.#clusterBits;
    const last = Math.floor((offset + Math.max(length, 1) - 1) / size);
    for (let c = Math.floor(offset / size); c <= last; c++) {
      const found = this.#kinds.get(c);
      if (found !== undefined && found !== kind) return found;
    }
    return undefined;
  }

  /** Throws (and marks the image corrupt) if [offset, offset+length) holds metadata other than `kind`. */
  async check(kind: MetadataKind | 'data', offset: number, length: number): Promise<void> {
    for (const cluster of this.#clusters(offset, length)) {
      const found = this.#kinds.get(cluster);
      if (found !== undefined && found !== kind) {
        const message =
          `Preventing invalid write on metadata (overlaps with ${found}); ` +
          `write of ${kind} at offset 0x${offset.toString(16)}, length ${length}`;
        // Once: marking the image corrupt writes the header, which may overlap in turn (a
        // hostile image can claim cluster 0 for a table), and must not recurse.
        const report = this.onCorruption;
        this.onCorruption = undefined;
        await report?.(message);
        throw new VdiskError('EIO', message);
      }
    }
  }

  *#clusters(offset: number, length: number): Generator<number> {
    const first = Math.floor(offset / 2 ** this.#clusterBits);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / 2 ** this.#clusterBits);
    for (let c = first; c <= last; c++) yield c;
  }
}
