/**
 * The persistent dirty bitmaps of an open image, kept as QEMU keeps them:
 *
 * - Before the first change to a writable image, every bitmap that is not already in use is
 *   marked in use in the directory on disk (QEMU's update_ext_header_and_dir_in_place: the
 *   autoclear bit is cleared around the in-place write, so a torn directory is never trusted).
 * - While open, each write, write-zeroes and discard sets the bits of the enabled bitmaps.
 * - On close, each bitmap is stored anew (data clusters, table, then a new directory and the
 *   header pointing at it), and the old clusters are freed. A crash before that leaves the
 *   bitmaps in use, which QEMU and vdisk then treat as inconsistent.
 *
 * A bitmap found in use on open was not stored after a crash: it is inconsistent, is not
 * tracked, stays in use on disk, and can only be removed.
 */
import type { BitmapInfo, DirtyBitmapView, PersistentBitmaps } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import {
  BITMAP_FLAG_AUTO,
  BITMAP_FLAG_IN_USE,
  BITMAP_LIMITS,
  type BitmapDirectoryEntry,
  bitmapTableSize,
  directoryEntrySize,
  encodeBitmapDirectory,
} from '../codec/bitmap-directory.js';
import { AUTOCLEAR_BITMAPS, MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAPS } from '../codec/constants.js';
import type { BitmapsExtension } from '../codec/header-extensions.js';
import {
  type BitmapStoreDeps,
  freeBitmapClusters,
  storeBitmapData,
  storedChunks,
  writeBitmapDirectory,
} from './bitmap-storage.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import type { HeaderStore } from './header-store.js';

export interface Qcow2BitmapsDeps extends BitmapStoreDeps {
  header: HeaderStore;
  readOnly: boolean;
  /** The image's virtual size now. */
  size: () => number;
}

function isPowerOf2(n: number): boolean {
  return Number.isInteger(Math.log2(n));
}

function inconsistent(name: string): VdiskError {
  return new VdiskError(
    'EINVAL',
    `Bitmap '${name}' is inconsistent and cannot be used; remove it (bitmap --remove) to delete it from the image`,
  );
}

export class Qcow2Bitmaps implements PersistentBitmaps {
  readonly #deps: Qcow2BitmapsDeps;
  /** The directory as it is on disk now. */
  #stored: BitmapDirectoryEntry[];
  #ext: BitmapsExtension | undefined;
  /** The bitmaps in use by this image, in directory order (consistent ones only). */
  readonly #live = new Map<string, DirtyBitmap>();
  /** Bitmaps handed out by get() before activation: they become the live ones, so readers see writes. */
  readonly #views = new Map<string, DirtyBitmap>();
  /** Names found in use on open (and not removed since). */
  readonly #inconsistent: Set<string>;
  /** Every bitmap's name, in directory order: added ones go last, as in QEMU. */
  readonly #order: string[];
  /** A bitmap was removed: the directory must be written even if no bitmap is left in use. */
  #removed = false;
  /** Marked in use on disk by this open: the bitmaps are stored on close. */
  #active = false;
  #activating: Promise<void> | undefined;

  constructor(deps: Qcow2BitmapsDeps, ext: BitmapsExtension | undefined, entries: BitmapDirectoryEntry[]) {
    this.#deps = deps;
    this.#ext = ext;
    this.#stored = entries;
    this.#inconsistent = new Set(entries.filter((e) => e.flags & BITMAP_FLAG_IN_USE).map((e) => e.name));
    this.#order = entries.map((e) => e.name);
  }

  get canStore(): boolean {
    return this.#deps.header.header.version >= 3;
  }

  /** The bitmaps as the directory on disk lists them (qemu-img info). */
  list(): BitmapInfo[] {
    return this.#stored.map((e) => ({
      name: e.name,
      granularity: 2 ** e.granularityBits,
      flags: [...(e.flags & BITMAP_FLAG_IN_USE ? ['in-use'] : []), ...(e.flags & BITMAP_FLAG_AUTO ? ['auto'] : [])],
    }));
  }

  /** A bitmap's current bits (for export and copying); inconsistent bitmaps are refused. */
  get(name: string): DirtyBitmap {
    const live = this.#live.get(name);
    if (live) return live;
    const e = this.#stored.find((s) => s.name === name);
    if (!e || !this.#order.includes(name)) throw new VdiskError('ENOENT', `Dirty bitmap '${name}' not found`);
    if (this.#inconsistent.has(name)) throw inconsistent(name);
    let view = this.#views.get(name);
    if (!view) {
      view = this.#fromDisk(e);
      this.#views.set(name, view);
    }
    return view;
  }

  /**
   * Marks the consistent bitmaps in use on disk, once, before the image changes; from then on
   * they are tracked in memory and stored on close.
   */
  activate(): Promise<void> {
    this.#activating ??= this.#activate();
    return this.#activating;
  }

  /** Sets the bits for a guest range in every enabled bitmap. */
  async markDirty(offset: number, length: number): Promise<void> {
    for (const bitmap of this.#live.values()) if (bitmap.enabled) await bitmap.setRange(offset, length);
  }

  /** Refuses a resize while a bitmap is inconsistent (QEMU's qcow2_truncate_bitmaps_check). */
  checkResizable(): void {
    for (const name of this.#inconsistent) throw inconsistent(name);
  }

  /** Follows a resize of the image. */
  async resize(size: number): Promise<void> {
    for (const bitmap of this.#live.values()) await bitmap.resize(size);
  }

  /** Adds an empty bitmap (qemu-img bitmap --add). */
  async add(name: string, granularity: number, enabled: boolean): Promise<void> {
    // Everything is checked before the image is touched: a refused add changes nothing.
    if (name === '') throw new VdiskError('EINVAL', 'Bitmap name cannot be empty');
    if (Buffer.byteLength(name, 'utf8') > BITMAP_LIMITS.maxNameBytes) {
      throw new VdiskError('EINVAL', `Bitmap name too long: ${name}`);
    }
    // QEMU takes the granularity as a 32-bit number: 2^32 and above are refused the same way.
    if (!Number.isInteger(granularity) || granularity < 512 || granularity >= 2 ** 32 || !isPowerOf2(granularity)) {
      throw new VdiskError('EINVAL', 'Granularity must be power of 2 and at least 512');
    }
    const names = this.#order;
    if (names.includes(name)) throw new VdiskError('EINVAL', `Bitmap already exists: ${name}`);
    if (this.#deps.header.header.version < 3) {
      const where = this.#deps.file.filename ?? 'image';
      throw new VdiskError(
        'ENOTSUP',
        `Can't make bitmap '${name}' persistent in '${where}': Cannot store dirty bitmaps in qcow2 v2 files`,
      );
    }
    const bits = Math.log2(granularity);
    const { clusterSize, size } = { clusterSize: this.#deps.clusterSize, size: this.#deps.size() };
    if (bitmapTableSize(size, bits, clusterSize) * clusterSize > BITMAP_LIMITS.maxPhysBytes) {
      throw new VdiskError('EINVAL', 'Too much space will be occupied by the bitmap. Use larger granularity');
    }
    if (names.length + 1 > MAX_BITMAPS) throw new VdiskError('EINVAL', 'Too many persistent bitmaps');
    const dirBytes = [...names, name].reduce((n, s) => n + directoryEntrySize(s), 0);
    if (dirBytes > MAX_BITMAP_DIRECTORY_SIZE) throw new VdiskError('EINVAL', 'Bitmap directory is too large');
    await this.activate();
    this.#live.set(name, new DirtyBitmap({ name, granularityBits: bits, clusterSize, size, enabled }));
    this.#order.push(name);
  }

  /** Removes a bitmap, inconsistent ones included (qemu-img bitmap --remove). */
  async remove(name: string): Promise<void> {
    if (!this.#order.includes(name)) throw new VdiskError('ENOENT', `Dirty bitmap '${name}' not found`);
    await this.activate();
    this.#live.delete(name);
    this.#inconsistent.delete(name);
    this.#order.splice(this.#order.indexOf(name), 1);
    this.#removed = true;
  }

  async clear(name: string): Promise<void> {
    (await this.#usable(name)).clear();
  }

  async setEnabled(name: string, enabled: boolean): Promise<void> {
    (await this.#usable(name)).enabled = enabled;
  }

  async merge(target: string, source: DirtyBitmapView): Promise<void> {
    await (await this.#usable(target)).merge(source);
  }

  /** The bitmap `name`, to be changed by an operation of qemu-img bitmap. */
  async #usable(name: string): Promise<DirtyBitmap> {
    if (this.#order.includes(name) && !this.#inconsistent.has(name)) await this.activate();
    const live = this.#live.get(name);
    if (live) return live;
    if (this.#inconsistent.has(name)) throw inconsistent(name);
    throw new VdiskError('ENOENT', `Dirty bitmap '${name}' not found`);
  }

  /**
   * Stores every bitmap this open marked in use, then frees what the old directory named.
   * Returns whether anything was written.
   */
  async store(): Promise<boolean> {
    // Nothing to store when there are no bitmaps in use here and none was removed (QEMU writes
    // nothing then either): an image with only inconsistent bitmaps keeps them as they are.
    if (!this.#active || (this.#live.size === 0 && !this.#removed)) return false;
    // An image found corrupt while open is written no more: its bitmaps stay in use (inconsistent).
    if (this.#deps.writer.corruption !== undefined) return false;
    const deps = this.#deps;
    const entries: BitmapDirectoryEntry[] = [];
    // Inconsistent bitmaps keep their entries; every other old entry's clusters are freed after.
    const replaced = this.#stored.filter((e) => !this.#inconsistent.has(e.name));
    for (const name of this.#order) {
      const bitmap = this.#live.get(name);
      if (!bitmap) {
        entries.push(this.#stored.find((e) => e.name === name)!);
        continue;
      }
      const table = await storeBitmapData(deps, bitmap);
      entries.push({
        name,
        ...table,
        flags: bitmap.enabled ? BITMAP_FLAG_AUTO : 0,
        granularityBits: bitmap.granularityBits,
      });
    }
    const ext = entries.length > 0 ? await writeBitmapDirectory(deps, entries) : undefined;
    // The new clusters' refcounts are durable before the header names them.
    await deps.allocator.flushRefcounts();
    await deps.header.setBitmapsExtension(ext);
    const old = this.#ext;
    this.#ext = ext;
    this.#stored = entries;
    this.#active = false;
    this.#removed = false;
    if (old) {
      deps.writer.release('bitmap-directory', old.directoryOffset, old.directorySize);
      await deps.allocator.free(old.directoryOffset, Math.ceil(old.directorySize / deps.clusterSize));
    }
    for (const e of replaced) await freeBitmapClusters(deps, e);
    return true;
  }

  async #activate(): Promise<void> {
    const { header, writer, file } = this.#deps;
    if (this.#deps.readOnly) throw new VdiskError('EROFS', 'The image is opened read-only');
    // Autoclear bits this implementation does not keep up to date are cleared (v2 has none).
    const keep = this.#ext ? AUTOCLEAR_BITMAPS : 0;
    await header.setAutoclear(header.header.autoclearFeatures & keep);
    for (const e of this.#stored) {
      if (this.#inconsistent.has(e.name)) continue;
      this.#live.set(e.name, this.#views.get(e.name) ?? this.#fromDisk(e));
    }
    this.#active = true;
    const ext = this.#ext;
    if (!ext || this.#live.size === 0) return;
    // In place, with the autoclear bit off around the write, as QEMU does.
    const marked = this.#stored.map((e) => ({ ...e, flags: e.flags | BITMAP_FLAG_IN_USE }));
    await header.setAutoclear(header.header.autoclearFeatures & ~AUTOCLEAR_BITMAPS);
    await writer.writeTable('bitmap-directory', ext.directoryOffset, encodeBitmapDirectory(marked));
    await file.flush();
    await header.setAutoclear(header.header.autoclearFeatures | AUTOCLEAR_BITMAPS);
    this.#stored = marked;
  }

  #fromDisk(e: BitmapDirectoryEntry): DirtyBitmap {
    return new DirtyBitmap({
      name: e.name,
      granularityBits: e.granularityBits,
      clusterSize: this.#deps.clusterSize,
      size: this.#deps.size(),
      enabled: (e.flags & BITMAP_FLAG_AUTO) !== 0,
      base: storedChunks(this.#deps.file, e, this.#deps.clusterSize),
    });
  }
}
