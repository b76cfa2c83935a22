/**
 * The raw format: guest offset = host offset, optionally through a window (offset, size) of
 * the child, as QEMU's raw driver allows. Everything is allocated at this layer; what the
 * bytes are (data or hole) is the child's answer.
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  NodeDescription,
  WriteFlags,
  ZeroFlags,
} from '../../block/driver.js';
import { VdiskError } from '../../block/errors.js';
import type { Preallocation } from '../../block/preallocation.js';

export interface RawOptions {
  /** Where the guest's byte 0 lies in the child. */
  offset?: number;
  /** The guest length; default: the rest of the child. */
  size?: number;
}

export class RawDriver implements BlockDriver {
  readonly driverName = 'raw';
  readonly child: BlockDriver;
  readonly #base: number;
  readonly #size: number | undefined;

  constructor(child: BlockDriver, options: RawOptions = {}) {
    this.child = child;
    this.#base = options.offset ?? 0;
    this.#size = options.size;
    if (this.#base + (this.#size ?? 0) > child.length()) {
      throw new VdiskError(
        'EINVAL',
        `The raw window (offset ${this.#base}, size ${this.#size ?? 0}) is past the file's end`,
      );
    }
  }

  get filename(): string | undefined {
    return this.child.filename;
  }

  get capabilities(): DriverCapabilities {
    const windowed = this.#base !== 0 || this.#size !== undefined;
    return { ...this.child.capabilities, resize: this.child.capabilities.resize && !windowed };
  }

  get alignment(): Alignment {
    return this.child.alignment;
  }

  get readOnly(): boolean {
    return this.child.readOnly;
  }

  length(): number {
    return this.#size ?? this.child.length() - this.#base;
  }

  read(offset: number, buf: Buffer): Promise<void> {
    return this.child.read(this.#base + offset, buf);
  }

  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    return this.child.write(this.#base + offset, buf, flags);
  }

  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    return this.child.writeZeroes(this.#base + offset, length, flags);
  }

  discard(offset: number, length: number): Promise<void> {
    return this.child.discard(this.#base + offset, length);
  }

  flush(): Promise<void> {
    return this.child.flush();
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    const extent = await this.child.blockStatus(this.#base + offset, length);
    // A protocol node that knows the chain behind it (an NBD export with qemu:allocation-depth)
    // gives a depth; anything else is this image's own allocated bytes.
    if (extent.depth !== undefined) return { ...extent, offset };
    return { ...extent, offset, allocated: true, depth: 0 };
  }

  truncate(length: number, preallocation: Preallocation): Promise<void> {
    if (preallocation === 'metadata') {
      return Promise.reject(new VdiskError('EINVAL', 'Preallocation mode metadata is not supported for raw images'));
    }
    return this.child.truncate(this.#base + length, preallocation);
  }

  close(): Promise<void> {
    return this.child.close();
  }

  describe(): NodeDescription {
    return { format: 'raw' };
  }

  allocatedSize(): Promise<number | undefined> {
    return this.child.allocatedSize?.() ?? Promise.resolve(undefined);
  }
}
