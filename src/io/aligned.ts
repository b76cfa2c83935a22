/**
 * Page-aligned buffers for O_DIRECT I/O, in pure JS.
 *
 * A Node Buffer has no alignment guarantee, but WebAssembly.Memory is mmap'ed, so a view at a
 * multiple of 4096 into it is page-aligned. Buffers are carved from slabs (one Memory each) by
 * power-of-two size class and kept on free lists, so steady-state I/O allocates no memory.
 * Each Memory reserves a large amount of virtual address space (guard regions), so slabs are
 * never grown (growing would detach live views) and their count is bounded: a class's slabs
 * double in size, which keeps it logarithmic in the peak number of buffers.
 */
import { VdiskError } from '../block/errors.js';

/** Enough of the WebAssembly global for this module (@types/node does not declare it). */
declare const WebAssembly: {
  Memory: new (descriptor: { initial: number; maximum?: number }) => { readonly buffer: ArrayBuffer };
};

/** Alignment of every buffer handed out: the page size, enough for any logical block size. */
export const BUFFER_ALIGNMENT = 4096;

const WASM_PAGE = 65536;
const MIN_CLASS = BUFFER_ALIGNMENT;
const MAX_CLASS = 1 << 30;
const FIRST_SLAB_BYTES = 1 << 20;
const MAX_SLAB_BYTES = 1 << 28;

interface Slab {
  readonly classSize: number;
  /** One full-size view per slot; acquire hands out these (or a prefix of them). */
  readonly slots: Buffer[];
  readonly inUse: Uint8Array;
  readonly owner: SizeClass;
}

interface SizeClass {
  readonly size: number;
  /** Free slots as [slab, index] pairs packed into two parallel stacks. */
  readonly freeSlabs: Slab[];
  readonly freeIndex: number[];
  slabBytes: number;
}

export interface PoolStats {
  /** WebAssembly.Memory objects created (each reserves address space). */
  memories: number;
  /** Bytes in all slabs. */
  bytes: number;
  /** Buffers handed out and not yet released. */
  inUse: number;
}

export class AlignedPool {
  private readonly classes: SizeClass[] = [];
  private readonly slabs = new WeakMap<ArrayBuffer, Slab>();
  private memories = 0;
  private bytes = 0;
  private outstanding = 0;

  /** @param maxMemories bound on the Memory objects (slabs) this pool may create. */
  constructor(private readonly maxMemories = 96) {}

  /** A buffer of exactly `size` bytes whose start is 4096-aligned. Contents are undefined. */
  acquire(size: number): Buffer {
    if (!Number.isInteger(size) || size < 0 || size > MAX_CLASS) {
      throw new VdiskError('EINVAL', `Aligned buffer of ${size} bytes is out of range (max ${MAX_CLASS})`);
    }
    const cls = this.classFor(size);
    if (cls.freeSlabs.length === 0) this.addSlab(cls);
    const slab = cls.freeSlabs.pop()!;
    const index = cls.freeIndex.pop()!;
    slab.inUse[index] = 1;
    this.outstanding++;
    const slot = slab.slots[index];
    return size === slot.length ? slot : slot.subarray(0, size);
  }

  /** Returns a buffer from acquire() to its free list. Releasing twice or a foreign buffer throws. */
  release(buf: Buffer): void {
    const slab = this.slabs.get(buf.buffer as ArrayBuffer);
    const index = slab ? buf.byteOffset / slab.classSize : -1;
    if (!slab || !Number.isInteger(index) || slab.inUse[index] !== 1) {
      throw new VdiskError('EINVAL', 'Released a buffer that is not an outstanding aligned-pool buffer');
    }
    slab.inUse[index] = 0;
    this.outstanding--;
    slab.owner.freeSlabs.push(slab);
    slab.owner.freeIndex.push(index);
  }

  /** True when `buf` lies in this pool's memory at a 4096-aligned start (usable for O_DIRECT as is). */
  owns(buf: Buffer): boolean {
    return this.slabs.has(buf.buffer as ArrayBuffer) && buf.byteOffset % BUFFER_ALIGNMENT === 0;
  }

  stats(): PoolStats {
    return { memories: this.memories, bytes: this.bytes, inUse: this.outstanding };
  }

  private classFor(size: number): SizeClass {
    const classSize = size <= MIN_CLASS ? MIN_CLASS : 2 ** Math.ceil(Math.log2(size));
    const key = Math.log2(classSize);
    let cls = this.classes[key];
    if (!cls) {
      cls = { size: classSize, freeSlabs: [], freeIndex: [], slabBytes: Math.max(FIRST_SLAB_BYTES, classSize * 2) };
      this.classes[key] = cls;
    }
    return cls;
  }

  private addSlab(cls: SizeClass): void {
    if (this.memories >= this.maxMemories) {
      throw new VdiskError(
        'ENOSPC',
        `Aligned buffer pool exhausted (${this.memories} slabs, ${this.outstanding} buffers in use)`,
      );
    }
    const bytes = Math.max(cls.slabBytes, cls.size);
    const pages = Math.ceil(bytes / WASM_PAGE);
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    const count = Math.floor((pages * WASM_PAGE) / cls.size);
    const slab: Slab = { classSize: cls.size, slots: [], inUse: new Uint8Array(count), owner: cls };
    for (let i = 0; i < count; i++) slab.slots.push(Buffer.from(memory.buffer, i * cls.size, cls.size));
    // Push in reverse so that the lowest addresses are handed out first.
    for (let i = count - 1; i >= 0; i--) {
      cls.freeSlabs.push(slab);
      cls.freeIndex.push(i);
    }
    this.slabs.set(memory.buffer, slab);
    this.memories++;
    this.bytes += pages * WASM_PAGE;
    cls.slabBytes = Math.min(cls.slabBytes * 2, Math.max(MAX_SLAB_BYTES, cls.size));
  }
}

/** The process-wide pool shared by all file drivers, so slabs are reused across images. */
export const alignedPool = new AlignedPool();
