/**
 * `create`: a new image of a given format and size, as qemu-img create makes it. Every check
 * (format, size, options, what the format can do) happens in planCreate, before anything on
 * disk is touched; the format's own creator (src/format/registry.ts) then makes the image.
 */
import { cacheMode } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { backingPath } from '../engine/backing.js';
import { formatDefinition, isFormatName } from '../engine/formats.js';
import { openImage } from '../engine/open.js';
import type { CreateOptionValue, CreateTarget, FormatCreator, ProgressCallback } from '../format/create-options.js';
import { FileDriver } from '../io/file.js';
import { StagedFile } from '../io/staged-file.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { isNbdUri } from '../remote/nbd/uri.js';
import { optionsObject } from './arguments.js';
import { openExportTarget } from './export-target.js';
import { formatOptionHelp, formatOptionSummary, joinOptionLists, resolveOptions } from './options.js';
import { parseSize } from './size.js';

export interface CreateImageOptions {
  filename: string;
  /** Image format; default raw, as qemu-img. */
  format?: string;
  /** Virtual size: bytes, or a size text such as "64M". May instead come from options.size. */
  size?: number | bigint | string;
  /** `-o` options: one list ("preallocation=full,size=1G"), several, or an object of values. */
  options?: string | readonly string[] | Readonly<Record<string, CreateOptionValue>>;
  /** Called while a long preallocation runs, with bytes done and bytes in total. */
  onProgress?: ProgressCallback;
  /** -u: the backing file is not opened (it may not exist yet); the size must then be given. */
  unsafeBacking?: boolean;
  /** Settings for the NBD client, when the backing file is an NBD URI. */
  nbd?: NbdClientOptions;
}

/** A checked creation request: what will be made, and qemu-img's line announcing it. */
export interface CreatePlan {
  filename: string;
  format: string;
  size: number;
  /** The options given, converted to their types (without size). */
  options: Readonly<Record<string, CreateOptionValue>>;
  /** "Formatting 'x.img', fmt=raw size=1048576 preallocation=off", as qemu-img create prints it. */
  summary: string;
  creator: FormatCreator;
  /** The backing file is not to be opened (create -u). */
  unsafeBacking: boolean;
  /** Settings for the NBD client, when the backing file is an NBD URI (opened again to create). */
  nbd?: NbdClientOptions;
}

/** Prefixes a message with the image name, as qemu-img does for errors inside bdrv_img_create. */
function aboutFile(filename: string, err: unknown): unknown {
  if (!(err instanceof VdiskError) || err.message.startsWith(`${filename}: `)) return err;
  return new VdiskError(err.code, `${filename}: ${err.message}`, { cause: err.cause ?? err });
}

function creatorOf(filename: string, format: string): FormatCreator {
  let creator: FormatCreator | undefined;
  try {
    creator = formatDefinition(format).create;
  } catch (err) {
    throw aboutFile(filename, err);
  }
  if (!creator) throw new VdiskError('ENOTSUP', `Format driver '${format}' does not support image creation`);
  return creator;
}

function optionInput(options: CreateImageOptions['options']): string | Readonly<Record<string, CreateOptionValue>> {
  if (options === undefined || options === '') return '';
  if (typeof options === 'string') return joinOptionLists([options]);
  if (Array.isArray(options)) return options.length > 0 ? joinOptionLists(options as readonly string[]) : '';
  return options as Readonly<Record<string, CreateOptionValue>>;
}

/** Checks a creation request completely without touching anything. */
export function planCreate(request: CreateImageOptions): CreatePlan {
  const { filename } = optionsObject(request, 'create options');
  const format = request.format ?? 'raw';
  if (!filename) throw new VdiskError('EINVAL', 'Expecting image file name');
  const given = optionInput(request.options);
  const size = request.size === undefined ? undefined : parseSize(request.size);
  const creator = creatorOf(filename, format);
  try {
    const resolved = resolveOptions(given, creator.options);
    const sizeOption = resolved.get('size');
    if (size !== undefined && sizeOption) {
      throw new VdiskError('EINVAL', 'The image size must be specified only once');
    }
    const finalSize = size ?? (sizeOption?.value as number | undefined);
    if (finalSize === undefined) throw new VdiskError('EINVAL', 'Image creation needs a size parameter');
    if (!sizeOption) {
      resolved.set('size', {
        desc: creator.options.find((d) => d.name === 'size')!,
        text: String(finalSize),
        value: finalSize,
      });
    }
    const options: Record<string, CreateOptionValue> = {};
    for (const [name, option] of resolved) if (name !== 'size') options[name] = option.value;
    creator.validate?.({ filename, size: finalSize, options });
    const described = formatOptionSummary(creator.options, resolved);
    const summary = `Formatting '${filename}', fmt=${format}${described ? ` ${described}` : ''}`;
    return {
      filename,
      format,
      size: finalSize,
      options,
      summary,
      creator,
      unsafeBacking: Boolean(request.unsafeBacking),
      ...(request.nbd ? { nbd: request.nbd } : {}),
    };
  } catch (err) {
    throw aboutFile(filename, err);
  }
}

/**
 * planCreate, after taking the size from the backing image when the request names a backing
 * file and no size (as qemu-img create -b does). The backing image must open.
 */
export async function planCreateWithBacking(request: CreateImageOptions): Promise<CreatePlan> {
  optionsObject(request, 'create options');
  if (request.size !== undefined || request.unsafeBacking) return planCreate(request);
  const format = request.format ?? 'raw';
  const creator = creatorOf(request.filename, format);
  let backing: { file: string; format: string } | undefined;
  try {
    const resolved = resolveOptions(optionInput(request.options), creator.options);
    if (resolved.has('size')) return planCreate(request);
    const file = resolved.get('backing_file')?.value;
    const fmt = resolved.get('backing_fmt')?.value;
    if (file === undefined) return planCreate(request);
    if (fmt === undefined) throw new VdiskError('EINVAL', 'Backing file specified without backing format');
    backing = { file: String(file), format: String(fmt) };
  } catch (err) {
    throw aboutFile(request.filename, err);
  }
  let size: number;
  try {
    size = await backingImageSize(request.filename, backing.file, backing.format, request.nbd);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const code = err instanceof VdiskError ? err.code : 'EIO';
    throw aboutFile(
      request.filename,
      new VdiskError(code, `${message}; could not open the backing image`, { cause: err }),
    );
  }
  return planCreate({ ...request, size });
}

/**
 * The virtual size of the backing image a new image names (relative to the new image), opened
 * read-only and shared, as qemu-img create opens it.
 */
async function backingImageSize(
  newImage: string,
  name: string,
  format: string,
  nbd?: NbdClientOptions,
): Promise<number> {
  if (!isFormatName(format)) throw new VdiskError('ENOTSUP', `Backing format '${format}' is not supported`);
  const image = await openImage(backingPath(newImage, name) ?? name, { format, readOnly: true, forceShare: true, nbd });
  try {
    return image.length;
  } finally {
    await image.close();
  }
}

/**
 * Makes the image a plan describes. It is built out of sight and named only when complete and
 * synced, so a failure (or a kill) leaves no file, or the old one, behind. With `into`, the
 * image goes into a staged file the caller commits (convert writes the data first).
 */
export async function executeCreate(plan: CreatePlan, onProgress?: ProgressCallback, into?: StagedFile): Promise<void> {
  if (isNbdUri(plan.filename)) return createInExport(plan, onProgress);
  let staged = into;
  try {
    staged ??= await StagedFile.begin(plan.filename);
    const opener = staged.opener;
    await plan.creator.create(
      creation(plan, onProgress, () =>
        FileDriver.open({ filename: plan.filename, cache: cacheMode('writeback'), readOnly: false, openImpl: opener }),
      ),
    );
    if (!into) await staged.commit();
  } catch (err) {
    if (!into) await staged?.abort();
    throw aboutFile(plan.filename, err);
  }
}

/**
 * An image made inside an existing NBD export (export-target.ts). There is no file to build out
 * of sight: what can be refused is refused before the export is opened.
 */
async function createInExport(plan: CreatePlan, onProgress?: ProgressCallback): Promise<void> {
  try {
    const preallocation = plan.options.preallocation;
    if (preallocation !== undefined && preallocation !== 'off') {
      throw new VdiskError(
        'ENOTSUP',
        `Preallocation mode '${String(preallocation)}' is not supported inside an NBD export`,
      );
    }
    await plan.creator.create(creation(plan, onProgress, () => openExportTarget(plan.filename, plan.nbd)));
  } catch (err) {
    throw aboutFile(plan.filename, err);
  }
}

function creation(plan: CreatePlan, onProgress: ProgressCallback | undefined, openTarget: () => Promise<CreateTarget>) {
  return {
    filename: plan.filename,
    size: plan.size,
    options: plan.options,
    onProgress,
    openTarget,
    backingSize: plan.unsafeBacking
      ? undefined
      : (name: string, format: string) => backingImageSize(plan.filename, name, format, plan.nbd),
  };
}

/** What createImage made. */
export type CreatedImage = Omit<CreatePlan, 'creator' | 'unsafeBacking' | 'nbd'>;

/** Creates an image: checks the request, then makes it. Returns what was made. */
export async function createImage(request: CreateImageOptions): Promise<CreatedImage> {
  const plan = await planCreateWithBacking(request);
  await executeCreate(plan, request.onProgress);
  const { creator: _creator, unsafeBacking: _unsafe, nbd: _nbd, ...made } = plan;
  return made;
}

/**
 * The text of `-o help` for a format: with a file name, every option ("Supported options:");
 * without, the format's own list and a note about protocol options, as qemu-img prints it.
 */
export function createOptionHelp(format = 'raw', filename?: string): string {
  const creator = formatDefinition(format).create;
  if (!creator) throw new VdiskError('ENOTSUP', `Format driver '${format}' does not support image creation`);
  const list = formatOptionHelp(creator.options);
  if (filename !== undefined) return `Supported options:\n${list}`;
  return (
    `Supported ${format} options:\n${list}\n` +
    'The protocol level may support further options.\nSpecify the target filename to include those options.\n'
  );
}
