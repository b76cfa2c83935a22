/**
 * The open policy: the one place that turns a file name and options into a driver graph and a
 * BlockBackend. The format is given, or probed only when the caller asks for it ('probe'), so a
 * raw image holding a guest-written qcow2 header is never taken for qcow2 behind the user's back.
 * Backing files named inside an image are resolved here too: relative to the image that names
 * them, never `json:` pseudo-names, read-only, with a depth limit and loop detection.
 */
import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { type FormatName, formatDefinition, probeFormat } from '../format/registry.js';
import { FileDriver } from '../io/file.js';
import { BlockBackend } from './backend.js';
import { type CacheMode, parseCacheMode } from './cache-mode.js';
import type { BlockDriver } from './driver.js';
import { VdiskError } from './errors.js';

export interface OpenImageOptions {
  /** The image format, or 'probe' to recognise it from its first bytes (qemu-img's default). */
  format: FormatName | 'probe';
  /** Host cache mode, by name or as parsed; default writeback. */
  cache?: string | CacheMode;
  readOnly?: boolean;
  /** Take QEMU-compatible image locks (default true). */
  lock?: boolean;
  /** Leave backing files closed (info, map of one layer). */
  noBacking?: boolean;
  /** qcow2: bytes of L2 tables kept in memory (QEMU's l2-cache-size); default 32 MiB or the whole image. */
  l2CacheSize?: number;
}

export interface OpenedImage {
  backend: BlockBackend;
  format: FormatName;
}

/** A backing chain deeper than this is refused (it is almost surely a loop or an attack). */
export const MAX_BACKING_DEPTH = 32;

export async function openImage(filename: string, options: OpenImageOptions): Promise<BlockBackend> {
  return (await openImageWithFormat(filename, options)).backend;
}

/** Like openImage, and says which format was used (for tools that probed). */
export async function openImageWithFormat(
  filename: string,
  options: OpenImageOptions,
  /** Opens the image's own file in place of open(2) (an image being built out of sight). */
  openFile?: FileOpener,
): Promise<OpenedImage> {
  const cache = typeof options.cache === 'object' ? options.cache : parseCacheMode(options.cache ?? 'default');
  const readOnly = Boolean(options.readOnly);
  const { driver, format } = await openNode(filename, options.format, {
    cache,
    readOnly,
    lock: options.lock ?? true,
    noBacking: Boolean(options.noBacking),
    l2CacheSize: options.l2CacheSize,
    chain: [],
    openFile,
  });
  return { backend: new BlockBackend(driver, { writeCache: cache.writeCache, readOnly }), format };
}

interface NodeOptions {
  cache: CacheMode;
  readOnly: boolean;
  lock: boolean;
  noBacking: boolean;
  l2CacheSize: number | undefined;
  /** Real paths of the images above this one, to find loops. */
  chain: string[];
  /** For the top image only: how its file is opened. */
  openFile?: FileOpener;
}

type FileOpener = (path: string, flags: number, mode: number) => Promise<number>;

async function openNode(
  filename: string,
  requested: FormatName | 'probe',
  options: NodeOptions,
): Promise<{ driver: BlockDriver; format: FormatName }> {
  const file = await FileDriver.open({
    filename,
    cache: options.cache,
    readOnly: options.readOnly,
    lock: options.lock,
    openImpl: options.openFile,
  });
  try {
    let format: FormatName;
    if (requested === 'probe') {
      const head = Buffer.alloc(Math.min(512, file.length()));
      if (head.length > 0) await file.read(0, head);
      format = probeFormat(head);
    } else {
      format = formatDefinition(requested).name;
    }
    const real = await realpath(filename).catch(() => resolve(filename));
    const chain = [...options.chain, real];
    const driver = await formatDefinition(format).open(file, {
      filename,
      cache: options.cache,
      readOnly: options.readOnly,
      l2CacheSize: options.l2CacheSize,
      openBacking: options.noBacking
        ? undefined
        : (name, backingFormat) =>
            openBacking(filename, name, backingFormat, { ...options, chain, openFile: undefined }),
    });
    return { driver, format };
  } catch (err) {
    await file.close();
    throw err;
  }
}

async function openBacking(
  parent: string,
  name: string,
  format: FormatName | undefined,
  options: NodeOptions,
): Promise<BlockDriver> {
  if (name.startsWith('json:')) {
    throw new VdiskError(
      'ENOTSUP',
      `Backing file name '${name.slice(0, 64)}' of '${parent}' is a json: name, which vdisk refuses`,
    );
  }
  if (options.chain.length >= MAX_BACKING_DEPTH) {
    throw new VdiskError('ECORRUPT', `The backing chain of '${parent}' is deeper than ${MAX_BACKING_DEPTH} images`);
  }
  // Named as QEMU names it: the parent's directory joined with the relative name.
  const path = isAbsolute(name) ? name : join(dirname(parent), name);
  const real = await realpath(path).catch(() => path);
  if (options.chain.includes(real)) {
    throw new VdiskError('ECORRUPT', `The backing chain of '${parent}' loops back to '${name}'`);
  }
  if (format !== undefined && format !== 'raw' && format !== 'qcow2') {
    throw new VdiskError('ENOTSUP', `Backing file '${name}' has format '${format}', which vdisk does not support`);
  }
  try {
    const { driver } = await openNode(path, format ?? 'probe', { ...options, readOnly: true });
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
