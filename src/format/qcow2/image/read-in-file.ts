/**
 * Reading host bytes the way QEMU reads a truncated image: what lies past the end of the file
 * reads as zeros, and the file is never asked for bytes it does not have.
 */
import type { BlockDriver } from '../../../block/driver.js';

export async function readInFile(file: BlockDriver, offset: number, out: Buffer): Promise<void> {
  const inFile = Math.max(0, Math.min(out.length, file.length() - offset));
  if (inFile > 0) await file.read(offset, out.subarray(0, inFile));
  out.fill(0, inFile);
}
