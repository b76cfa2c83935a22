/**
 * What a qcow2 image with internal snapshots holds, as one comparable value: the snapshots' ids
 * and names in table order, a hash of the active content, and a hash of every snapshot's
 * content. The power-loss tests of snapshot operations compare each crash state with the image
 * before and after the operation.
 */
import { createHash } from 'node:crypto';
import { cacheMode } from '../../../src/block/cache-mode.js';
import type { BlockDriver } from '../../../src/block/driver.js';
import { qcow2Format } from '../../../src/format/qcow2/index.js';
import { FlatDriver } from './flat-driver.js';

export interface ImageState {
  snapshots: string[];
  active: string;
  contents: string[];
}

async function hashOf(image: BlockDriver): Promise<string> {
  const hash = createHash('sha1');
  const buf = Buffer.alloc(64 * 1024);
  const length = image.length();
  for (let pos = 0; pos < length; pos += buf.length) {
    const piece = buf.subarray(0, Math.min(buf.length, length - pos));
    await image.read(pos, piece);
    hash.update(piece);
  }
  return `${length}:${hash.digest('hex').slice(0, 12)}`;
}

/** Opens bytes read-only, at a snapshot when `id` is given. */
export function openBytes(bytes: Buffer, id?: string, readOnly = true): Promise<BlockDriver> {
  return qcow2Format.open(new FlatDriver(bytes, { name: 'image.qcow2', readOnly }), {
    filename: 'image.qcow2',
    cache: cacheMode('writeback'),
    readOnly,
    snapshot: id === undefined ? undefined : { id },
  });
}

/** The state of the image in `bytes` (which must open read-only). */
export async function imageState(bytes: Buffer): Promise<ImageState> {
  const image = await openBytes(bytes);
  const list = image.describe?.().snapshots ?? [];
  const active = await hashOf(image);
  await image.close();
  const contents: string[] = [];
  for (const s of list) {
    const at = await openBytes(bytes, s.id);
    contents.push(await hashOf(at));
    await at.close();
  }
  return { snapshots: list.map((s) => `${s.id}:${s.name}`), active, contents };
}
