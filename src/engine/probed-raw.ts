/**
 * A raw image whose format was probed must not be turned into another format by a guest write:
 * the next probe would then take the guest's bytes for a qcow2 header (and, say, its backing
 * file name for a file to open). As QEMU does for probed raw images, a write that would make the
 * first sector probe as anything but raw is refused. The open policy puts this filter above
 * every writable raw image it probed.
 */
import type { Alignment, BlockDriver, DriverCapabilities, Extent, WriteFlags, ZeroFlags } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import type { Preallocation } from '../block/preallocation.js';
import { probeFormat } from './formats.js';

const SECTOR = 512;

export class ProbedRawGuard implements BlockDriver {
  readonly driverName: string;
  readonly #child: BlockDriver;

  constructor(child: BlockDriver) {
    this.#child = child;
    this.driverName = child.driverName;
  }

  get filename(): string | undefined {
    return this.#child.filename;
  }
  get capabilities(): DriverCapabilities {
    return this.#child.capabilities;
  }
  get alignment(): Alignment {
    return this.#child.alignment;
  }
  get readOnly(): boolean {
    return this.#child.readOnly;
  }
  length(): number {
    return this.#child.length();
  }
  read(offset: number, buf: Buffer): Promise<void> {
    return this.#child.read(offset, buf);
  }

  async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    if (offset < SECTOR) await this.#checkFirstSector(offset, buf);
    return this.#child.write(offset, buf, flags);
  }

  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    // Zeros never make a header: nothing to check.
    return this.#child.writeZeroes(offset, length, flags);
  }
  discard(offset: number, length: number): Promise<void> {
    return this.#child.discard(offset, length);
  }
  flush(): Promise<void> {
    return this.#child.flush();
  }
  blockStatus(offset: number, length: number): Promise<Extent> {
    return this.#child.blockStatus(offset, length);
  }
  truncate(length: number, preallocation: Preallocation): Promise<void> {
    return this.#child.truncate(length, preallocation);
  }
  close(): Promise<void> {
    return this.#child.close();
  }
  allocatedSize(): Promise<number | undefined> {
    return this.#child.allocatedSize?.() ?? Promise.resolve(undefined);
  }
  describe() {
    return this.#child.describe?.() ?? { format: this.driverName };
  }

  async #checkFirstSector(offset: number, data: Buffer): Promise<void> {
    const head = Buffer.alloc(Math.min(SECTOR, this.#child.length()));
    await this.#child.read(0, head);
    data.copy(head, offset, 0, Math.min(data.length, head.length - offset));
    if (probeFormat(head) !== 'raw') {
      throw new VdiskError(
        'EACCES',
        'Writes that would make the probed raw image look like another format are refused; give the format as raw',
      );
    }
  }
}
