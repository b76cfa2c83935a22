/**
 * The red team's image: a 4 TiB qcow2 of 384 KiB whose L1 entries all name one L2 table, whose
 * every entry names the one data cluster. Each L1 entry stands for 512 MiB of data runs that
 * never merge on the host, and each adds 8192 references to one cluster (past refcount 65535,
 * every one is an overflow message in check).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { decodeHeader } from '../../../src/format/qcow2/codec/header.js';
import { createImage, openImage } from '../../../src/index.js';

const CLUSTER = 64 * 1024;

/** Writes the image to `file`; `l1Entries` limits how many L1 entries name the table (default: all 8192). */
export async function sharedL2Image(file: string, l1Entries = Number.POSITIVE_INFINITY): Promise<void> {
  await createImage({ filename: file, format: 'qcow2', size: 4 * 1024 ** 4 });
  const image = await openImage(file, { format: 'qcow2' });
  await image.write(0, Buffer.alloc(CLUSTER, 0x5a));
  await image.close();
  const bytes = await readFile(file);
  const h = decodeHeader(bytes);
  const l1 = h.l1TableOffset;
  const l1Entry = bytes.subarray(l1, l1 + 8);
  const l2 = Number(l1Entry.readBigUInt64BE(0) & 0x00fffffffffffe00n);
  for (let i = 1; i < Math.min(h.l1Size, l1Entries); i++) l1Entry.copy(bytes, l1 + i * 8);
  for (let i = 1; i < CLUSTER / 8; i++) bytes.copy(bytes, l2 + i * 8, l2, l2 + 8);
  assert.equal(bytes.length, 384 * 1024);
  await writeFile(file, bytes);
}
