/**
 * A protocol driver that keeps the "host file" in memory, sparsely, for tests and for
 * tools that build images before writing them out. Chunks never written read as zeros and
 * report as holes, like a sparse file.
 */
import type { Alignment, BlockDriver, DriverCapabilities, Extent, ZeroFlags } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import type { Preallocation } from '../block/preallocation.js';

const CHUNK = 64 * 1024;

export interface MemoryDriverOptions {
  length?: number;
  readOnly?: boolean;
  /** Shown as the file name in extents and info. */
  name?: string;
}

export class MemoryDriver implements BlockDriver {
  readonly driverName = 'memory';
  readonly filename: string | undefined;
  readonly capabilities: DriverCapabilities = {
    fua: true,
    discard: true,
    writeZeroes: true,
    blockStatus: true,
    resize: true,
  };
  readonly alignment: Alignment = { request: 1, memory: 1 };
  readonly readOnly: boolean;

  #length: number;
  readonly #chunks = new Map<number, Buffer>();
  #closed = false;

  constructor(options: MemoryDriverOptions = {}) {
    this.#length = options.length ?? 0;
    this.readOnly = Boolean(options.readOnly);
    this.filename = options.name;
  }

  length(): number {
    return this.#length;
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    this.#check();
    this.#forEachChunk(offset, buf.length, (index, start, len, pos) => {
      const chunk = this.#chunks.get(index);
      if (chunk) chunk.copy(buf, pos, start, start + len);
      else buf.fill(0, pos, pos + len);
    });
  }

  async write(offset: number, buf: Buffer): Promise<void> {
    this.#check();
    this.#forEachChunk(offset, buf.length, (index, start, len, pos) => {
      let chunk = this.#chunks.get(index);
      if (!chunk) {
        chunk = Buffer.alloc(CHUNK);
        this.#chunks.set(index, chunk);
      }
      buf.copy(chunk, start, pos, pos + len);
    });
    this.#length = Math.max(this.#length, offset + buf.length);
  }

  async writeZeroes(offset: number, length: number, _flags?: ZeroFlags): Promise<void> {
    this.#check();
    this.#zero(offset, length);
    this.#length = Math.max(this.#length, offset + length);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#check();
    this.#zero(offset, length);
  }

  async flush(): Promise<void> {
    this.#check();
  }

  async blockStatus(offset: number, length: number): Promise<Extent> {
    this.#check();
    const end = Math.min(offset + length, Math.max(this.#length, offset + 1));
    const data = this.#chunks.has(Math.floor(offset / CHUNK));
    let pos = offset;
    while (pos < end && this.#chunks.has(Math.floor(pos / CHUNK)) === data) {
      pos = (Math.floor(pos / CHUNK) + 1) * CHUNK;
    }
    const runEnd = Math.min(pos, end);
    return {
      offset,
      length: runEnd - offset,
      allocated: true,
      data,
      zero: !data,
      hostOffset: offset,
      hostFile: this.filename,
    };
  }

  async truncate(length: number, _preallocation: Preallocation): Promise<void> {
    this.#check();
    if (length < this.#length) this.#zero(length, this.#length - length);
    this.#length = length;
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  async allocatedSize(): Promise<number> {
    return this.#chunks.size * CHUNK;
  }

  /** Zeroes a range, dropping whole chunks so they read back as holes. */
  #zero(offset: number, length: number): void {
    this.#forEachChunk(offset, length, (index, start, len) => {
      const chunk = this.#chunks.get(index);
      if (!chunk) return;
      if (len === CHUNK) this.#chunks.delete(index);
      else chunk.fill(0, start, start + len);
    });
  }

  #forEachChunk(
    offset: number,
    length: number,
    fn: (index: number, start: number, len: number, pos: number) => void,
  ): void {
    let pos = 0;
    while (pos < length) {
      const at = offset + pos;
      const index = Math.floor(at / CHUNK);
      const start = at - index * CHUNK;
      const len = Math.min(CHUNK - start, length - pos);
      fn(index, start, len, pos);
      pos += len;
    }
  }

  #check(): void {
    if (this.#closed) throw new VdiskError('ESHUTDOWN', 'The memory image is closed');
  }
}
