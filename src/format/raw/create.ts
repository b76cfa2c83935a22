/**
 * Creating a raw image, as QEMU's file-posix driver does (raw_co_create, handle_aiocb_truncate):
 * the length is rounded up to a multiple of 512, the target is truncated to nothing first (it
 * is new, unless it is a block device written in place), the new length is preallocated as asked, and for off and falloc the first block is written
 * with zeros (QEMU's allocate_first_block: 4 KiB, or 512 bytes for images under 4 KiB), so that
 * `qemu-img map` shows the same extents for a vdisk image as for a qemu-img one.
 */
import { VdiskError } from '../../block/errors.js';
import { PREALLOCATIONS, type Preallocation } from '../../block/preallocation.js';
import {
  type CreateOptionDesc,
  type CreateRequest,
  type CreateSpec,
  type FormatCreator,
  SIZE_OPTION,
} from '../create-options.js';

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

function preallocationOf(request: CreateSpec): Preallocation {
  return (request.options.preallocation as Preallocation | undefined) ?? 'off';
}

function validateRaw(request: CreateSpec): void {
  const mode = preallocationOf(request);
  if (mode !== 'off' && mode !== 'falloc' && mode !== 'full') {
    throw new VdiskError('EINVAL', `Unsupported preallocation mode: ${mode}`);
  }
}

function tooLarge(err: unknown): boolean {
  const cause = err instanceof VdiskError ? err.cause : err;
  return (cause as { code?: string } | undefined)?.code === 'EFBIG';
}

async function createRaw(request: CreateRequest): Promise<void> {
  validateRaw(request);
  const mode = preallocationOf(request);
  const length = Math.ceil(request.size / SECTOR) * SECTOR;
  const file = await request.openTarget();
  try {
    await file.truncate(0, 'off');
    await file.truncateWithProgress(length, mode, request.onProgress);
    if (mode !== 'full' && length > 0) {
      await file.write(0, Buffer.alloc(length < FIRST_BLOCK ? SECTOR : FIRST_BLOCK));
    }
    await file.flush();
  } catch (err) {
    if (tooLarge(err)) {
      throw new VdiskError('EINVAL', `The image size is too large for file format 'raw'`, { cause: err });
    }
    throw err;
  } finally {
    await file.close();
  }
}

export const rawCreator: FormatCreator = {
  options: RAW_CREATE_OPTIONS,
  validate: validateRaw,
  create: createRaw,
};
