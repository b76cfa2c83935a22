/**
 * The open policy: the one place that turns a file name and options into a driver graph and a
 * BlockBackend. The format is given or probed; a raw image that was probed is guarded so a
 * guest can never make it probe as another format. Backing files named inside an image are
 * opened here too, by the chain policy of backing.ts, read-only. An NBD URI (nbd://…,
 * nbd+unix://…, nbds://…) opens the NBD client in the place of the host file, so a remote export
 * is probed, formatted and chained exactly as a file is.
 */
import { BlockBackend } from '../block/backend.js';
import {
  CACHE_MODE_NAMES,
  type CacheMode,
  type CacheModeName,
  cacheMode,
  parseCacheMode,
} from '../block/cache-mode.js';
import type { BlockDriver } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import type { FormatName, OpenContext, SnapshotRef } from '../format/format.js';
import { FileDriver } from '../io/file.js';
import { nativeZstd } from '../io/zstd.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { NbdDriver } from '../remote/nbd/nbd-driver.js';
import { isNbdUri } from '../remote/nbd/uri.js';
import { chainKey, nextInChain } from './backing.js';
import { formatDefinition, isFormatName, probeFormat } from './formats.js';
import { ProbedRawGuard } from './probed-raw.js';

export interface OpenImageOptions {
  /** The image format, or 'probe' to recognise it from its first bytes (the default, as qemu-img). */
  format?: FormatName | 'probe';
  /** Host cache mode (default writeback). */
  cache?: CacheModeName | 'default' | CacheMode;
  /** Open for reading only (default false). */
  readOnly?: boolean;
  /**
   * Share the image with a writer that holds it (qemu-img's -U): no image lock is taken. Only
   * with readOnly; the data may change underneath.
   */
  forceShare?: boolean;
  /** Open the backing chain (default true); false reads unallocated ranges as zeros (info, map of one layer). */
  backing?: boolean;
  /** qcow2: bytes of L2 tables kept in memory (QEMU's l2-cache-size); default 32 MiB or the whole image. */
  l2CacheSize?: number;
  /**
   * Backing files must lie inside this directory (default: anywhere, as QEMU). For images from
   * untrusted hands: a backing name such as /etc/shadow or a block device is refused.
   */
  confineBacking?: string;
  /** NBD URIs a confined backing chain may still name (refused otherwise). */
  allowBackingUris?: readonly string[];
  /** How NBD URIs (the image's, or backing files') are connected: timeouts, connections, TLS. */
  nbd?: NbdClientOptions;
  /** Present this internal snapshot's content instead of the image's (read-only only). */
  snapshot?: SnapshotRef;
  /**
   * The backing image this many layers down (1: the image's own backing file) opens read-write,
   * for commit, which writes into it; every other layer stays read-only.
   */
  writableBacking?: number;
}

export interface OpenedImage {
  backend: BlockBackend;
  format: FormatName;
  /** The layer that writableBacking asked for, as a backend of its own (its node belongs to `backend`'s graph). */
  writableBacking?: BlockBackend;
}

/** Opens an image and returns the checked entry point to it. */
export async function openImage(filename: string, options: OpenImageOptions = {}): Promise<BlockBackend> {
  return (await openImageWithFormat(filename, options)).backend;
}

type FileOpener = (path: string, flags: number, mode: number) => Promise<number>;

/** Like openImage, and says which format was used (for tools that probed). */
export async function openImageWithFormat(
  filename: string,
  options: OpenImageOptions = {},
  /** Opens the image's own file in place of open(2) (an image being built out of sight). */
  openFile?: FileOpener,
): Promise<OpenedImage> {
  const o = checkOptions(filename, options);
  const { driver, format } = await openNode(filename, o.format, { ...o, chain: [], openFile });
  const backend = new BlockBackend(driver, { writeCache: o.cache.writeCache, readOnly: o.readOnly });
  if (o.writableBacking === undefined) return { backend, format };
  let node: BlockDriver | undefined = driver;
  for (let depth = 0; depth < o.writableBacking && node; depth++) node = node.describe?.()?.backing?.node;
  if (!node || node.readOnly) {
    await backend.close();
    throw new VdiskError('EINVAL', `'${filename}' has no backing image ${o.writableBacking} layers down`);
  }
  return { backend, format, writableBacking: new BlockBackend(node, { writeCache: o.cache.writeCache }) };
}

interface CheckedOptions {
  format: FormatName | 'probe';
  cache: CacheMode;
  readOnly: boolean;
  lock: boolean;
  backing: boolean;
  l2CacheSize: number | undefined;
  confineBacking: string | undefined;
  allowBackingUris: readonly string[];
  nbd: NbdClientOptions | undefined;
  snapshot: SnapshotRef | undefined;
  writableBacking: number | undefined;
}

/** Every option checked, with a VdiskError (EINVAL) for anything a caller could get wrong. */
function checkOptions(filename: unknown, options: unknown): CheckedOptions {
  if (typeof filename !== 'string' || filename === '') {
    throw new VdiskError('EINVAL', 'The image file name must be a non-empty string');
  }
  if (typeof options !== 'object' || options === null) {
    throw new VdiskError('EINVAL', 'The open options must be an object');
  }
  const o = options as OpenImageOptions;
  const format = o.format ?? 'probe';
  if (format !== 'probe' && !isFormatName(format)) throw new VdiskError('EINVAL', `Unknown file format '${format}'`);
  let cache: CacheMode;
  if (o.cache === undefined || typeof o.cache === 'string') cache = parseCacheMode(o.cache ?? 'default');
  else if (typeof o.cache === 'object' && CACHE_MODE_NAMES.includes(o.cache.name)) cache = o.cache;
  else throw new VdiskError('EINVAL', `Invalid cache option: ${String(o.cache)}`);
  if (o.l2CacheSize !== undefined && !(Number.isSafeInteger(o.l2CacheSize) && o.l2CacheSize > 0)) {
    throw new VdiskError('EINVAL', `Invalid l2CacheSize: ${String(o.l2CacheSize)} (a positive number of bytes)`);
  }
  const readOnly = Boolean(o.readOnly);
  if (o.forceShare && !readOnly) {
    throw new VdiskError(
      'EINVAL',
      `Could not open '${filename}': force-share (-U) can only be used with read-only images`,
    );
  }
  if (o.confineBacking !== undefined && (typeof o.confineBacking !== 'string' || o.confineBacking === '')) {
    throw new VdiskError('EINVAL', 'confineBacking must be a directory name');
  }
  if (o.snapshot !== undefined && !readOnly) {
    throw new VdiskError('EINVAL', 'An internal snapshot can only be opened read-only');
  }
  const allowed = o.allowBackingUris ?? [];
  if (!Array.isArray(allowed) || !allowed.every((u) => typeof u === 'string' && isNbdUri(u))) {
    throw new VdiskError('EINVAL', 'allowBackingUris must be a list of NBD URIs');
  }
  const writableBacking = o.writableBacking;
  if (writableBacking !== undefined && !(Number.isSafeInteger(writableBacking) && writableBacking > 0)) {
    throw new VdiskError('EINVAL', `Invalid writableBacking: ${String(writableBacking)} (a depth of 1 or more)`);
  }
  return {
    format,
    cache,
    readOnly,
    lock: !o.forceShare,
    backing: o.backing ?? true,
    l2CacheSize: o.l2CacheSize,
    confineBacking: o.confineBacking,
    allowBackingUris: allowed,
    nbd: o.nbd,
    snapshot: o.snapshot,
    writableBacking,
  };
}

interface NodeOptions extends CheckedOptions {
  /** Real paths of the images above this one, to find loops. */
  chain: string[];
  /** For the top image only: how its file is opened. */
  openFile?: FileOpener;
}

/**
 * Opens an image's host file and names its format (given, or probed from the first bytes),
 * without opening the format: for tools that work on the file itself (check). The caller
 * closes the file.
 */
export async function openImageFile(
  filename: string,
  options: Pick<OpenImageOptions, 'format' | 'readOnly' | 'forceShare' | 'nbd'> = {},
): Promise<{ file: BlockDriver; format: FormatName }> {
  const o = checkOptions(filename, options);
  return openFileNode(filename, o.format, { ...o, chain: [] });
}

/**
 * What a format hook needs to open the image in a file from openImageFile by itself (snapshot
 * operations): its name, writeback caching, the zstd codec; no backing chain.
 */
export function hookContext(filename: string, readOnly: boolean): OpenContext {
  return { filename, cache: cacheMode('writeback'), readOnly, zstd: nativeZstd };
}

/** The protocol node: the NBD client for a URI, the host file otherwise. */
function openProtocolNode(filename: string, options: NodeOptions): Promise<BlockDriver> {
  if (isNbdUri(filename)) return NbdDriver.open(filename, { ...options.nbd, readOnly: options.readOnly });
  return FileDriver.open({
    filename,
    cache: options.cache,
    readOnly: options.readOnly,
    lock: options.lock,
    openImpl: options.openFile,
  });
}

async function openFileNode(
  filename: string,
  requested: FormatName | 'probe',
  options: NodeOptions,
): Promise<{ file: BlockDriver; format: FormatName }> {
  const file = await openProtocolNode(filename, options);
  if (requested !== 'probe') return { file, format: requested };
  try {
    const head = Buffer.alloc(Math.min(512, file.length()));
    if (head.length > 0) await file.read(0, head);
    return { file, format: probeFormat(head) };
  } catch (err) {
    await file.close();
    throw err;
  }
}

async function openNode(
  filename: string,
  requested: FormatName | 'probe',
  options: NodeOptions,
): Promise<{ driver: BlockDriver; format: FormatName }> {
  const { file, format } = await openFileNode(filename, requested, options);
  try {
    const chain = [...options.chain, await chainKey(filename)];
    const definition = formatDefinition(format);
    if (options.snapshot && !definition.snapshots) {
      throw new VdiskError(
        'ENOTSUP',
        `Failed to load snapshot: Block format '${format}' does not support temporarily loading internal snapshots`,
      );
    }
    let driver = await definition.open(file, {
      filename,
      cache: options.cache,
      readOnly: options.readOnly,
      l2CacheSize: options.l2CacheSize,
      zstd: nativeZstd,
      snapshot: options.snapshot,
      openBacking: options.backing
        ? (name, backingFormat) =>
            openBacking(filename, name, backingFormat, { ...options, chain, snapshot: undefined })
        : undefined,
    });
    if (requested === 'probe' && format === 'raw' && !driver.readOnly) driver = new ProbedRawGuard(driver);
    return { driver, format };
  } catch (err) {
    await file.close();
    throw err;
  }
}

async function openBacking(
  parent: string,
  name: string,
  format: string | undefined,
  options: NodeOptions,
): Promise<BlockDriver> {
  const path = await nextInChain(parent, name, options.chain, {
    confineTo: options.confineBacking,
    allowUris: options.allowBackingUris,
  });
  if (format !== undefined && !isFormatName(format)) {
    throw new VdiskError('ENOTSUP', `Backing file '${name}' has format '${format}', which vdisk does not support`);
  }
  try {
    const readOnly = options.writableBacking !== options.chain.length;
    const { driver } = await openNode(path, format ?? 'probe', { ...options, readOnly, openFile: undefined });
    return driver;
  } catch (err) {
    if (err instanceof VdiskError) {
      throw new VdiskError(err.code, `Could not open backing file '${name}' of '${parent}': ${err.message}`, {
        cause: err,
      });
    }
    throw err;
  }
}
