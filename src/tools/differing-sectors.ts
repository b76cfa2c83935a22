/**
 * Writing only what differs from what a backing file already provides: rebase (into the
 * overlay, what the new backing file reads differently) and convert -B (into the new overlay,
 * what the source holds that the backing file does not). Compared sector by sector, as qemu-img
 * compares them.
 */
import type { BlockBackend } from '../block/backend.js';

export const SECTOR = 512;

/** `length` bytes of `image` at `offset`; what lies past its end (or all, without an image) reads as zeros. */
export async function readOrZeros(image: BlockBackend | undefined, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const inside = image ? Math.max(0, Math.min(length, image.length - offset)) : 0;
  if (inside > 0) await image!.readInto(offset, buf.subarray(0, inside));
  return buf;
}

/** Writes to `target` at `offset` the runs of sectors where `wanted` differs from `present`. */
export async function writeDifferentSectors(
  target: BlockBackend,
  offset: number,
  wanted: Buffer,
  present: Buffer,
): Promise<void> {
  let run = -1;
  for (let pos = 0; pos < wanted.length; pos += SECTOR) {
    const end = Math.min(pos + SECTOR, wanted.length);
    const differs = wanted.compare(present, pos, end, pos, end) !== 0;
    if (differs && run < 0) run = pos;
    if (!differs && run >= 0) {
      await target.write(offset + run, wanted.subarray(run, pos));
      run = -1;
    }
  }
  if (run >= 0) await target.write(offset + run, wanted.subarray(run));
}
