/**
 * What a disk image format is to the rest of vdisk: how to recognise it, how to open it over a
 * child node, and the optional hooks tools call instead of testing format names (create, check).
 * Each format exports one definition from its folder; the engine keeps the list.
 */
import type { CacheMode } from '../block/cache-mode.js';
import type { BlockDriver, SnapshotInfo } from '../block/driver.js';
import type { ZstdCodec } from '../io/zstd.js';
import type { FormatCreator } from './create-options.js';

export type FormatName = 'raw' | 'qcow2';

/** Every format vdisk knows, in the order probing tries them (raw, which matches anything, last). */
export const FORMAT_NAMES: readonly FormatName[] = ['qcow2', 'raw'];

/** What a format needs to open the images an image refers to (backing files). */
export interface OpenContext {
  filename: string | undefined;
  cache: CacheMode;
  readOnly: boolean;
  /** qcow2: bytes of L2 tables to cache. */
  l2CacheSize?: number;
  /** The zstd codec, for images whose clusters are stored with it. */
  zstd?: ZstdCodec;
  /** Opens another image through the open policy (relative names, depth, loops). */
  openBacking?: (name: string, format: FormatName | undefined) => Promise<BlockDriver>;
  /** Present the content of this internal snapshot, read-only (qemu-img convert -l, qemu-nbd -l). */
  snapshot?: SnapshotRef;
}

/**
 * Names an internal snapshot as QEMU's options do: `idOrName` matches an id first, then a name
 * (`-l NAME`); `id` and `name` must all match where given (`-l snapshot.id=ID,snapshot.name=NAME`).
 */
export interface SnapshotRef {
  id?: string;
  name?: string;
  idOrName?: string;
}

/** What a new snapshot records besides the disk's content. */
export interface NewSnapshotInfo {
  name: string;
  dateSec: number;
  dateNsec: number;
}

/**
 * Internal snapshots of an image in `file` (qemu-img snapshot): each call opens the image
 * read-write over `file`, changes it, and closes it again (closing `file`).
 */
export interface SnapshotHooks {
  /** Records the image's content as a new snapshot (-c). */
  create(file: BlockDriver, context: OpenContext, snapshot: NewSnapshotInfo): Promise<SnapshotInfo>;
  /** Makes the image's content (and size) that of the snapshot with this id or name (-a). */
  apply(file: BlockDriver, context: OpenContext, idOrName: string): Promise<void>;
  /** Removes the first snapshot of this name (-d). */
  delete(file: BlockDriver, context: OpenContext, name: string): Promise<void>;
}

export interface CheckCounts {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  /** One past the last byte of the image file that is in use. */
  imageEndOffset: number;
}

export type RepairMode = 'leaks' | 'all';

export interface CheckOptions {
  /** 'leaks': free leaked clusters; 'all': also repair corruptions (qemu-img check -r). */
  repair?: RepairMode;
  /** Called with each message line as it is found (qemu-img prints them on stderr). */
  onMessage?: (line: string) => void;
  /** Leave out the warnings qemu-img gives when it opens the image (for a second check). */
  noOpenWarnings?: boolean;
}

export interface CheckResult extends CheckCounts {
  /** The check could not be completed; qemu-img says "Check failed: <failure>" and exits 1. */
  failure?: string;
  /** The first messages (all of them are passed to onMessage). */
  messages: string[];
  messagesDropped: number;
}

export interface FormatDefinition {
  readonly name: FormatName;
  /** True when an image's first bytes are this format's. */
  probe(head: Buffer): boolean;
  open(child: BlockDriver, context: OpenContext): Promise<BlockDriver>;
  /** How to make a new image of this format (its -o options and the creation itself). */
  readonly create?: FormatCreator;
  /** Consistency check and repair of the image in `file` (qemu-img check); absent: no checks. */
  check?(file: BlockDriver, options: CheckOptions): Promise<CheckResult>;
  /** Internal snapshots; absent: the format has none (and opening at a snapshot is refused). */
  readonly snapshots?: SnapshotHooks;
}
