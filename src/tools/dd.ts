/**
 * `dd`: copies part of an image into a new image, as qemu-img dd does. The input is read from
 * block `skip` up to block `count` counted from the start of the input (qemu-img's reading of
 * count, which includes the skipped blocks), and every byte is written, zeros included, so the
 * output is allocated throughout as qemu-img's is. The output is built out of sight and named
 * when complete: a dd that fails leaves no file, or the old one as it was.
 */
import type { BlockBackend } from '../block/backend.js';
import { VdiskError } from '../block/errors.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { StagedFile } from '../io/staged-file.js';
import { fileName, optionsObject } from './arguments.js';
import { executeCreate, planCreateWithBacking } from './create.js';

export interface DdOptions {
  input: string;
  output: string;
  /** The input's format, or 'probe' (default). */
  inputFormat?: FormatName | 'probe';
  /** The output's format (default raw). */
  outputFormat?: string;
  /** Bytes per block (default 512). */
  blockSize?: number;
  /** Blocks of the input, from its start, to copy up to (default: all). */
  count?: bigint;
  /** Blocks of the input to skip (default 0). */
  skip?: bigint;
  /** Read an input another process holds writable (qemu-img -U). */
  forceShare?: boolean;
  /** What qemu-img reports and carries on after ("cannot skip to specified offset"). */
  onWarning?: (message: string) => void;
}

/** qemu-img dd's limit on bs: a C int. */
export const MAX_DD_BLOCK_SIZE = 2 ** 31 - 1;
const PIECE = 1 << 20;

export async function ddImage(ddOptions: DdOptions): Promise<void> {
  const o = optionsObject(ddOptions, 'dd options');
  fileName(o.input, 'input file name');
  fileName(o.output, 'output file name');
  const blockSize = o.blockSize ?? 512;
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > MAX_DD_BLOCK_SIZE) {
    throw new VdiskError('EINVAL', `Invalid bs specified. Must be between 1 and ${MAX_DD_BLOCK_SIZE}.`);
  }
  const { backend: input } = await openImageWithFormat(o.input, {
    format: o.inputFormat ?? 'probe',
    readOnly: true,
    forceShare: o.forceShare,
  });
  try {
    const bs = BigInt(blockSize);
    let end = BigInt(input.length);
    if (o.count !== undefined && o.count * bs < end) end = o.count * bs;
    const start = o.skip === undefined ? 0n : o.skip * bs;
    const beyond = start > end;
    const outSize = beyond ? 0 : Number(end - start);
    const plan = await planCreateWithBacking({ filename: o.output, format: o.outputFormat ?? 'raw', size: outSize });
    const staged = await StagedFile.begin(o.output);
    try {
      await executeCreate(plan, undefined, staged);
      // Like dd(1), a skip past the end makes an empty output; qemu-img says so and succeeds.
      if (beyond) o.onWarning?.(`${o.input}: cannot skip to specified offset`);
      const { backend: output } = await openImageWithFormat(
        o.output,
        { format: plan.format as FormatName, cache: 'unsafe' },
        staged.opener,
      );
      let copied = false;
      try {
        await copyRange(input, output, beyond ? 0 : Number(start), outSize);
        copied = true;
      } finally {
        const closing = output.close();
        await (copied ? closing : closing.catch(() => {}));
      }
      await staged.commit();
    } finally {
      await staged.abort();
    }
  } finally {
    await input.close();
  }
}

/** Copies `length` bytes from `from` in the input to the start of the output, writing every byte. */
async function copyRange(input: BlockBackend, output: BlockBackend, from: number, length: number): Promise<void> {
  const buf = Buffer.alloc(Math.min(PIECE, length));
  for (let done = 0; done < length; ) {
    const piece = buf.subarray(0, Math.min(PIECE, length - done));
    try {
      await input.readInto(from + done, piece);
    } catch (err) {
      throw wrap(err, 'error while reading from input image file');
    }
    try {
      await output.write(done, piece);
    } catch (err) {
      throw wrap(err, 'error while writing to output image file');
    }
    done += piece.length;
  }
}

function wrap(err: unknown, what: string): VdiskError {
  const message = err instanceof Error ? err.message : String(err);
  return new VdiskError(err instanceof VdiskError ? err.code : 'EIO', `${what}: ${message}`, { cause: err });
}
