/**
 * A protocol driver over one flat Buffer: the "host file" of the reliability tests. Unlike the
 * sparse MemoryDriver it can be copied and compared in one call, which is what crash states,
 * hostile images and fuzz cases need. Reads past the end return zeros, as a short pread would
 * leave a zero-filled buffer; writes past the end grow the file.
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  WriteFlags,
  ZeroFlags,
} from '../../../src/block/driver.js';
import { VdiskError } from '../../../src/block/errors.js';
import type { Preallocation } from '../../../src/block/preallocation.js';

export class FlatDriver implements BlockDriver {
  readonly driverName = 'file';
  readonly filename: string | undefined;
  readonly capabilities: DriverCapabilities = {
    fua: true,
    discard: true,
    writeZeroes: true,
    blockStatus: true,
    resize: true,
  };
  readonly alignment: Alignment = { request: 1, memory: 1 };
  readOnly: boolean;
  #buf: Buffer;
  #len: number;
  #closed = false;
  /** Writes that would make the file longer than this fail with ENOSPC. */
  readonly maxLength: number;

  constructor(
    content: Buffer = Buffer.alloc(0),
    options: { name?: string; readOnly?: boolean; copy?: boolean; maxLength?: number } = {},
  ) {
    this.filename = options.name;
    this.readOnly = Boolean(options.readOnly);
    this.maxLength = options.maxLength ?? 2 ** 34;
    this.#len = content.length;
    if (options.copy === false) this.#buf = content;
    else {
      this.#buf = Buffer.allocUnsafe(Math.max(4096, content.length));
      content.copy(this.#buf);
      this.#buf.fill(0, content.length);
    }
  }

  /** The file's bytes (a view; copy it to keep it). */
  bytes(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }

  length(): number {
    return this.#len;
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    this.#check();
    this.readSync(offset, buf);
  }

  readSync(offset: number, buf: Buffer): void {
    const n = Math.max(0, Math.min(buf.length, this.#len - offset));
    if (n > 0) this.#buf.copy(buf, 0, offset, offset + n);
    if (n < buf.length) buf.fill(0, n);
  }

  async write(offset: number, buf: Buffer, _flags?: WriteFlags): Promise<void> {
    this.#check();
    this.writeSync(offset, buf);
  }

  writeSync(offset: number, buf: Buffer): void {
    this.#reserve(offset + buf.length);
    buf.copy(this.#buf, offset);
    this.#len = Math.max(this.#len, offset + buf.length);
  }

  zeroSync(offset: number, length: number, grow: boolean): void {
    const end = grow ? offset + length : Math.min(offset + length, this.#len);
    if (end <= offset) return;
    this.#reserve(end);
    this.#buf.fill(0, offset, end);
    this.#len = Math.max(this.#len, end);
  }

  truncateSync(length: number): void {
    this.#reserve(length);
    if (length < this.#len) this.#buf.fill(0, length, this.#len);
    this.#len = length;
  }

  async writeZeroes(offset: number, length: number, _flags?: ZeroFlags): Promise<void> {
    this.#check();
    this.zeroSync(offset, length, true);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#check();
    this.zeroSync(offset, length, false);
  }

  async flush(): Promise<void> {
    this.#check();
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    this.#check();
    return { offset, length, allocated: true, data: true, zero: false, hostOffset: offset, hostFile: this.filename };
  }

  async truncate(length: number, _preallocation: Preallocation): Promise<void> {
    this.#check();
    this.truncateSync(length);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  async allocatedSize(): Promise<number> {
    return this.#len;
  }

  #reserve(end: number): void {
    if (end <= this.#buf.length) return;
    if (end > this.maxLength) {
      throw new VdiskError('ENOSPC', `The in-memory test file would grow past ${this.maxLength} bytes (to ${end})`);
    }
    const grown = Buffer.allocUnsafe(Math.max(end, this.#buf.length * 2));
    this.#buf.copy(grown, 0, 0, this.#len);
    grown.fill(0, this.#len);
    this.#buf = grown;
  }

  #check(): void {
    if (this.#closed) throw new VdiskError('ESHUTDOWN', 'The in-memory file is closed');
  }
}
