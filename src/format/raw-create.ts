/**
 * Creating a raw image, as QEMU's file-posix driver does (raw_co_create, handle_aiocb_truncate):
 * the length is rounded up to a multiple of 512, an existing file is truncated to nothing first,
 * the new length is preallocated as asked, and for off and falloc the first block is written
 * with zeros (QEMU's allocate_first_block: 4 KiB, or 512 bytes for images under 4 KiB), so that
 * `qemu-img map` shows the same extents for a vdisk image as for a qemu-img one.
 */
import { lstat, unlink } from 'node:fs/promises';
import { cacheMode } from '../block/cache-mode.js';
import { fromSystemError, VdiskError } from '../block/errors.js';
import { PREALLOCATIONS, type Preallocation } from '../block/preallocation.js';
import { FileDriver } from '../io/file.js';
import { type CreateOptionDesc, type CreateRequest, type FormatCreator, SIZE_OPTION } from './create-options.js';

const SECTOR = 512;
const FIRST_BLOCK = 4096;

export const RAW_CREATE_OPTIONS: readonly CreateOptionDesc[] = [
  SIZE_OPTION,
  {
    name: 'preallocation',
    type: 'str',
    help: 'Preallocation mode (allowed values: off, falloc, full)',
    values: PREALLOCATIONS,
  },
];

function preallocationOf(request: CreateRequest): Preallocation {
  return (request.options.preallocation as Preallocation | undefined) ?? 'off';
}

function validateRaw(request: CreateRequest): void {
  const mode = preallocationOf(request);
  if (mode !== 'off' && mode !== 'falloc' && mode !== 'full') {
    throw new VdiskError('EINVAL', `Unsupported preallocation mode: ${mode}`);
  }
}

async function exists(filename: string): Promise<boolean> {
  try {
    await lstat(filename);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return false;
    throw fromSystemError(err, `Could not create '${filename}'`);
  }
}

function tooLarge(err: unknown): boolean {
  const cause = err instanceof VdiskError ? err.cause : err;
  return (cause as { code?: string } | undefined)?.code === 'EFBIG';
}

async function createRaw(request: CreateRequest): Promise<void> {
  validateRaw(request);
  const { filename } = request;
  const mode = preallocationOf(request);
  const length = Math.ceil(request.size / SECTOR) * SECTOR;
  const existed = await exists(filename);
  let file: FileDriver;
  try {
    file = await FileDriver.open({ filename, cache: cacheMode('writeback'), readOnly: false, create: true });
  } catch (err) {
    if (err instanceof VdiskError && err.message.startsWith('Could not open')) {
      throw new VdiskError(err.code, err.message.replace(/^Could not open/, 'Could not create'), {
        cause: err.cause ?? err,
      });
    }
    throw err;
  }
  try {
    // An existing file loses its contents below; first make sure the new length is possible at
    // all, so that a size the filesystem cannot hold leaves the file as it was.
    if (existed && length > file.length()) {
      await file.truncate(length, 'off');
    }
    await file.truncate(0, 'off');
    await file.truncateWithProgress(length, mode, request.onProgress);
    if (mode !== 'full' && length > 0) {
      await file.write(0, Buffer.alloc(length < FIRST_BLOCK ? SECTOR : FIRST_BLOCK));
    }
    await file.flush();
    await file.close();
  } catch (err) {
    await file.close().catch(() => {});
    if (!existed) await unlink(filename).catch(() => {});
    if (tooLarge(err)) {
      throw new VdiskError('EINVAL', `The image size is too large for file format 'raw'`, { cause: err });
    }
    throw err;
  }
}

export const rawCreator: FormatCreator = {
  options: RAW_CREATE_OPTIONS,
  validate: validateRaw,
  create: createRaw,
};
