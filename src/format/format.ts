/**
 * What a disk image format is to the rest of vdisk: how to recognise it, how to open it over a
 * child node, and the optional hooks tools call instead of testing format names (create, check).
 * Each format exports one definition from its folder; the engine keeps the list.
 */
import type { CacheMode } from '../block/cache-mode.js';
import type { BitmapInfo, BlockDriver, Extent, SnapshotInfo } from '../block/driver.js';
import type { ZstdCodec } from '../io/zstd.js';
import type { CreateOptionDesc, CreateOptionValue, FormatCreator } from './create-options.js';

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

/** A backing file as an image names it. */
export interface BackingReference {
  name: string;
  format?: string;
}

export interface AmendRequest {
  /** The image's name, for messages. */
  filename: string;
  /** The -o options given, checked against the amender's list and converted. */
  options: Readonly<Record<string, CreateOptionValue>>;
  /** --force: allow changes that may lose data the format would otherwise keep. */
  force: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** What `amend` can change in an image of a format (qemu-img amend). */
export interface FormatAmender {
  /** Every option -o accepts for amend. */
  readonly options: readonly CreateOptionDesc[];
  /** Creation options amend refuses with "only supported for image creation". */
  readonly creationOnly: readonly string[];
  /** Makes the changes in the image in `file` (opened read-write); all checks come before the first write. */
  amend(file: BlockDriver, request: AmendRequest): Promise<void>;
}

/** What an image to be measured holds (qemu-img measure of an existing image). */
export interface MeasureSource {
  length: number;
  /** The source's block status, start to end. */
  extents(): AsyncIterable<Extent>;
  /** Persistent bitmaps the source carries, which a converted image would carry too. */
  bitmaps: readonly BitmapInfo[];
  /** Whether the source's format can keep persistent bitmaps. */
  keepsBitmaps: boolean;
}

export interface MeasureRequest {
  /** --size, when no source is given. */
  size?: number;
  source?: MeasureSource;
  /** The -o options for the new image, checked against the creator's list. */
  options: Readonly<Record<string, CreateOptionValue>>;
}

/** qemu-img measure's figures. */
export interface MeasureResult {
  required: number;
  fullyAllocated: number;
  /** Bytes the source's bitmaps need, when both formats keep bitmaps. */
  bitmaps?: number;
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
  /** Names another backing file (or none) in the image in `file`, durably; absent: the format has none. */
  setBacking?(file: BlockDriver, backing: BackingReference | undefined): Promise<void>;
  /** Changes an existing image's options (qemu-img amend); absent: the format has nothing to amend. */
  readonly amend?: FormatAmender;
  /** The space a new image of this format needs (qemu-img measure). */
  measure?(request: MeasureRequest): Promise<MeasureResult>;
  /** The format can keep persistent dirty bitmaps (they count in measure). */
  readonly persistentBitmaps?: boolean;
}
