/**
 * One persistent dirty bitmap while an image is open: bit i stands for the guest bytes
 * [i * granularity, (i + 1) * granularity), stored as QEMU serialises it (bit i is bit i % 8 of
 * byte i / 8). The bits are kept in chunks of one cluster each, the unit of a bitmap table entry.
 *
 * Only chunks that changed are held in memory; the others are read from the image when they are
 * needed (through `base`), so a bitmap costs memory for what the guest touched while open, not
 * for its size.
 */
import type { DirtyBitmapView, DirtyRun } from '../../../block/driver.js';

/** What a chunk holds on disk: its bytes, or one of the two shorthand states. */
export type StoredChunk = Buffer | 'zeros' | 'ones';

/** Reads chunk `index` of the bitmap as stored in the image. */
export type ChunkSource = (index: number) => Promise<StoredChunk>;

export interface DirtyBitmapOptions {
  name: string;
  granularityBits: number;
  clusterSize: number;
  /** Guest bytes covered. */
  size: number;
  enabled: boolean;
  /** The stored bits, for a bitmap loaded from the image (absent: every bit clear). */
  base?: ChunkSource;
}

export class DirtyBitmap implements DirtyBitmapView {
  readonly name: string;
  readonly granularityBits: number;
  enabled: boolean;
  readonly #clusterSize: number;
  #size: number;
  #base: ChunkSource | undefined;
  readonly #chunks = new Map<number, Buffer>();

  constructor(options: DirtyBitmapOptions) {
    this.name = options.name;
    this.granularityBits = options.granularityBits;
    this.enabled = options.enabled;
    this.#clusterSize = options.clusterSize;
    this.#size = options.size;
    this.#base = options.base;
  }

  get granularity(): number {
    return 2 ** this.granularityBits;
  }

  get size(): number {
    return this.#size;
  }

  /** Bits in the bitmap. */
  get bitCount(): number {
    return Math.ceil(this.#size / this.granularity);
  }

  /** Bits in one chunk (one cluster of bitmap data). */
  get bitsPerChunk(): number {
    return this.#clusterSize * 8;
  }

  /** Chunks (bitmap table entries) the bitmap needs. */
  get chunkCount(): number {
    return Math.ceil(Math.ceil(this.bitCount / 8) / this.#clusterSize);
  }

  /** Chunk `index` as it stands now; 'zeros' when every bit is clear. Do not modify the buffer. */
  async chunk(index: number): Promise<Buffer | 'zeros'> {
    const own = this.#chunks.get(index);
    if (own) return own;
    const stored = this.#base ? await this.#base(index) : 'zeros';
    if (stored === 'zeros') return 'zeros';
    const buf = stored === 'ones' ? Buffer.alloc(this.#clusterSize, 0xff) : stored;
    this.#maskTail(index, buf);
    return buf;
  }

  /** Sets the bits of every granule that [offset, offset+length) touches. */
  async setRange(offset: number, length: number): Promise<void> {
    if (length <= 0) return;
    const end = Math.min(this.bitCount, Math.ceil((offset + length) / this.granularity));
    await this.#setBits(Math.floor(offset / this.granularity), end);
  }

  /** Clears every bit. */
  clear(): void {
    this.#chunks.clear();
    this.#base = undefined;
  }

  /** Sets every bit that is set in `other` (which may have another granularity). */
  async merge(other: DirtyBitmapView): Promise<void> {
    for (let offset = 0; offset < Math.min(other.size, this.#size); ) {
      const run = await other.run(offset, this.#size - offset);
      if (run.dirty) await this.setRange(run.offset, run.length);
      offset += run.length;
    }
  }

  /** Follows a resize of the image: bits past a new end are dropped, new bits are clear. */
  async resize(size: number): Promise<void> {
    if (size < this.#size) {
      const keepChunks = Math.ceil(Math.ceil(Math.ceil(size / this.granularity) / 8) / this.#clusterSize);
      const last = keepChunks - 1;
      const tail = last >= 0 ? await this.chunk(last) : 'zeros';
      for (const index of [...this.#chunks.keys()]) if (index >= keepChunks) this.#chunks.delete(index);
      this.#size = size;
      if (tail !== 'zeros') {
        const own = Buffer.from(tail);
        this.#maskTail(last, own);
        this.#chunks.set(last, own);
      }
      return;
    }
    // Chunks past the old end read as clear: the stored table has no entries for them, and the
    // old last chunk was stored with its bits past the old end clear.
    this.#size = size;
  }

  /** The run of equal bits that starts at guest byte `offset`, at most `length` bytes long. */
  async run(offset: number, length: number): Promise<DirtyRun> {
    const g = this.granularity;
    const end = Math.min(offset + length, this.#size);
    let bit = Math.floor(offset / g);
    const lastBit = Math.ceil(end / g);
    const state = await this.#bitAt(bit);
    bit++;
    while (bit < lastBit) {
      const perChunk = this.bitsPerChunk;
      const index = Math.floor(bit / perChunk);
      const chunk = await this.chunk(index);
      const chunkEnd = Math.min(lastBit, (index + 1) * perChunk);
      if (chunk === 'zeros') {
        if (state) break;
        bit = chunkEnd;
        continue;
      }
      const stop = scanBits(chunk, bit - index * perChunk, chunkEnd - index * perChunk, state);
      bit = index * perChunk + stop;
      if (bit < chunkEnd) break;
    }
    const runEnd = Math.min(end, bit * g);
    return { offset, length: runEnd - offset, dirty: state };
  }

  /** Whether any bit is set. */
  async isEmpty(): Promise<boolean> {
    for (let i = 0; i < this.chunkCount; i++) {
      const chunk = await this.chunk(i);
      if (chunk !== 'zeros' && !isZero(chunk)) return false;
    }
    return true;
  }

  async #bitAt(bit: number): Promise<boolean> {
    const index = Math.floor(bit / this.bitsPerChunk);
    const chunk = await this.chunk(index);
    if (chunk === 'zeros') return false;
    const local = bit - index * this.bitsPerChunk;
    return (chunk[local >> 3]! & (1 << (local & 7))) !== 0;
  }

  async #setBits(from: number, to: number): Promise<void> {
    const perChunk = this.bitsPerChunk;
    for (let bit = from; bit < to; ) {
      const index = Math.floor(bit / perChunk);
      const stop = Math.min(to, (index + 1) * perChunk);
      const own = await this.#own(index);
      setBits(own, bit - index * perChunk, stop - index * perChunk);
      bit = stop;
    }
  }

  /** Chunk `index` in memory, to be changed. */
  async #own(index: number): Promise<Buffer> {
    const own = this.#chunks.get(index);
    if (own) return own;
    const now = await this.chunk(index);
    // Another request may have taken the chunk in while this one read it: keep that one's bits.
    const taken = this.#chunks.get(index);
    if (taken) return taken;
    const fresh = now === 'zeros' ? Buffer.alloc(this.#clusterSize) : Buffer.from(now);
    this.#chunks.set(index, fresh);
    return fresh;
  }

  /** Clears the bits of chunk `index` that lie past the bitmap's last bit. */
  #maskTail(index: number, buf: Buffer): void {
    const first = index * this.bitsPerChunk;
    const valid = this.bitCount - first;
    if (valid < this.bitsPerChunk) clearBitsFrom(buf, Math.max(0, valid));
  }
}

function setBits(buf: Buffer, from: number, to: number): void {
  let bit = from;
  while (bit < to && (bit & 7) !== 0) {
    buf[bit >> 3]! |= 1 << (bit & 7);
    bit++;
  }
  const wholeEnd = to & ~7;
  if (bit < wholeEnd) {
    buf.fill(0xff, bit >> 3, wholeEnd >> 3);
    bit = wholeEnd;
  }
  while (bit < to) {
    buf[bit >> 3]! |= 1 << (bit & 7);
    bit++;
  }
}

function clearBitsFrom(buf: Buffer, from: number): void {
  const byte = from >> 3;
  if ((from & 7) !== 0) {
    buf[byte]! &= (1 << (from & 7)) - 1;
    buf.fill(0, byte + 1);
  } else {
    buf.fill(0, byte);
  }
}

/** The first bit in [from, to) of `buf` that is not `state`, or `to`. */
function scanBits(buf: Buffer, from: number, to: number, state: boolean): number {
  const same = state ? 0xff : 0;
  let bit = from;
  while (bit < to) {
    if ((bit & 7) === 0 && bit + 8 <= to && buf[bit >> 3] === same) {
      bit += 8;
      continue;
    }
    if (((buf[bit >> 3]! >> (bit & 7)) & 1) !== (state ? 1 : 0)) return bit;
    bit++;
  }
  return to;
}

export function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
