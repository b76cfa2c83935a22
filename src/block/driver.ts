/**
 * The interface every node of the block-driver graph implements: protocol drivers (file,
 * memory), format drivers (raw, qcow2) and filters. Requests reaching a driver have already
 * been checked by BlockBackend (bounds, read-only, flags), so drivers do not repeat that.
 */
import type { Preallocation } from './preallocation.js';

export interface WriteFlags {
  /** Force unit access: the data is durable when the write completes. */
  fua?: boolean;
}

export interface ZeroFlags extends WriteFlags {
  /** The range may be deallocated (hole punched, cluster freed) as long as it reads as zero. */
  mayUnmap?: boolean;
  /** Fail with ENOTSUP rather than writing zero bytes when there is no cheap way (NBD FAST_ZERO). */
  noFallback?: boolean;
}

/** What a driver can do natively; BlockBackend emulates or refuses the rest. */
export interface DriverCapabilities {
  /** FUA writes are durable on completion without a separate flush of the whole image. */
  fua: boolean;
  /** discard releases host space. */
  discard: boolean;
  /** writeZeroes is cheaper than writing zero bytes. */
  writeZeroes: boolean;
  /** blockStatus distinguishes data, zero and unallocated ranges (else: everything is data). */
  blockStatus: boolean;
  /** truncate can change the length. */
  resize: boolean;
}

/** Size constraints, as NBD's BLOCK_SIZE info carries them. */
export interface Alignment {
  /** Requests not aligned to this are slower (read-modify-write) but still correct. */
  request: number;
  /** Buffers for direct I/O are aligned to this. */
  memory: number;
}

/**
 * The state of one range of guest offsets. A driver answers for the longest run that starts at
 * the asked offset and has the same state, up to the asked length.
 */
export interface Extent {
  offset: number;
  length: number;
  /**
   * Some layer decides what the range reads as: this image, or the backing image `depth`
   * levels down. False: no layer of the chain has it (it reads as zeros).
   */
  allocated: boolean;
  /** The range reads as zeros. */
  zero: boolean;
  /** The range is backed by bytes stored in a host file (not a hole, not a zero flag). */
  data: boolean;
  /** Where the range's bytes start in the host file named by hostFile, when they are there as is. */
  hostOffset?: number;
  hostFile?: string;
  /** The data is stored compressed (no host offset). */
  compressed?: boolean;
  /** How many backing layers down the range was found (0 = this image); the bottom layer's when unallocated. */
  depth?: number;
}

export interface BlockDriver {
  /** The driver's kind ("file", "memory", "raw", "qcow2"). */
  readonly driverName: string;
  /** The host file this node stands for, if any. */
  readonly filename: string | undefined;
  readonly capabilities: DriverCapabilities;
  readonly alignment: Alignment;
  readonly readOnly: boolean;

  /** Length in bytes of what this node presents (guest length for formats). */
  length(): number;

  read(offset: number, buf: Buffer): Promise<void>;
  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void>;
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void>;
  /** Hint that a range is no longer needed; it may read as anything this driver documents afterwards. */
  discard(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  blockStatus(offset: number, length: number): Promise<Extent>;
  /**
   * The consecutive extents from `offset` on (at least one, within `length`) that one bounded
   * step of this driver's work finds: a caller walking the image gets every run a table lookup
   * found at once, instead of asking again per run. Drivers without it answer blockStatus().
   */
  blockStatusMany?(offset: number, length: number): Promise<Extent[]>;
  truncate(length: number, preallocation: Preallocation): Promise<void>;
  /** Releases everything; pending state is written out first when writable. Idempotent. */
  close(): Promise<void>;

  /**
   * Drops everything this layer holds, so that the whole image reads from its backing file
   * again (QEMU's bdrv_make_empty, after a commit). Formats with a backing file only.
   */
  makeEmpty?(): Promise<void>;

  /** Writes one whole cluster compressed (formats that can: qcow2). */
  writeCompressed?(offset: number, buf: Buffer): Promise<void>;

  /** Bytes the node uses on the host (st_blocks * 512 for files), when known. */
  allocatedSize?(): Promise<number | undefined>;
  /** What a format node says about itself (protocol nodes need not answer). */
  describe?(): NodeDescription;
  /** The persistent dirty bitmaps stored in the image (formats that have them: qcow2). */
  persistentBitmaps?(): PersistentBitmaps;
}

/** A run of guest bytes that a dirty bitmap marks all dirty or all clean. */
export interface DirtyRun {
  offset: number;
  length: number;
  dirty: boolean;
}

/** One dirty bitmap's bits, as they stand. */
export interface DirtyBitmapView {
  readonly name: string;
  /** Bytes of guest data one bit stands for. */
  readonly granularity: number;
  /** Writes set its bits (QEMU's "auto" flag). */
  readonly enabled: boolean;
  /** Guest bytes it covers. */
  readonly size: number;
  /** The run of equal bits that starts at `offset`, at most `length` bytes long. */
  run(offset: number, length: number): Promise<DirtyRun>;
}

/**
 * The persistent dirty bitmaps of an image, with qemu-img bitmap's operations. Changes are
 * kept in memory and stored in the image when it is closed.
 */
export interface PersistentBitmaps {
  /** False where the image cannot hold bitmaps at all (qcow2 version 2). */
  readonly canStore: boolean;
  list(): BitmapInfo[];
  /** A bitmap to read; an unknown or inconsistent one is refused. */
  get(name: string): DirtyBitmapView;
  add(name: string, granularity: number, enabled: boolean): Promise<void>;
  remove(name: string): Promise<void>;
  clear(name: string): Promise<void>;
  setEnabled(name: string, enabled: boolean): Promise<void>;
  /** Sets in `target` every bit set in `source` (which may come from another image). */
  merge(target: string, source: DirtyBitmapView): Promise<void>;
}

/** An internal snapshot, as qemu-img snapshot -l and info list it. */
export interface SnapshotInfo {
  id: string;
  name: string;
  /** Bytes of saved VM state (0: a disk-only snapshot). */
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  /** Guest clock at the snapshot, in nanoseconds. */
  vmClockNsec: number;
  /** Instruction count for record/replay, when recorded. */
  icount?: number;
}

/** A persistent dirty bitmap stored in the image. */
export interface BitmapInfo {
  name: string;
  /** Bytes of guest data one bit stands for. */
  granularity: number;
  /** QEMU's flag names: 'in-use', 'auto'. */
  flags: string[];
}

/** A format node's facts about itself. */
export interface NodeDescription {
  format: string;
  /** The unit of allocation (qcow2's cluster size). */
  clusterSize?: number;
  /** Not closed cleanly with lazy refcounts: refcounts may be out of date. */
  dirty?: boolean;
  /** Marked corrupt: opens read-only until repaired. */
  corrupt?: boolean;
  /** The backing file the image names, and the node opened for it (absent when not opened). */
  backing?: { name: string; format?: string; node?: BlockDriver };
  snapshots?: SnapshotInfo[];
  bitmaps?: BitmapInfo[];
  /** Facts only this format has, with QEMU's key names (qemu-img info's format-specific data). */
  formatSpecific?: { type: string; data: Record<string, unknown> };
}
