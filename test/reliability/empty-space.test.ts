/**
 * Empty space costs nothing: block status of an empty qcow2 answers whole runs of empty L1
 * entries at once (one extent for an empty 1 PiB image), and map, compare and convert of empty
 * multi-terabyte images finish within the hostile family's per-case bound instead of doing
 * per-cluster work (minutes before). The bound guards against a pathology, not a speed: speed
 * is measured in bench/.
 */
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { compareImages, convertImage, createImage, mapImage, openImage } from '../../src/index.js';
import { withTempDir } from '../helpers/tmp.js';
import { config } from './lib/config.js';

const TiB = 1024 ** 4;

async function bounded<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const value = await fn();
  const ms = Date.now() - started;
  assert.ok(ms < 2 * config.caseTimeMs, `${what} took ${ms} ms`);
  return value;
}

describe('empty space in big images', () => {
  it('one extent for an empty 1 PiB qcow2; map, compare and convert of empty terabytes stay cheap', async () => {
    await withTempDir(async (dir) => {
      const huge = path.join(dir, 'huge.qcow2');
      await createImage({ filename: huge, format: 'qcow2', size: 1024 * TiB });
      const image = await openImage(huge, { format: 'qcow2', readOnly: true });
      const extents = [];
      for await (const e of image.extents()) extents.push(e);
      await image.close();
      assert.equal(extents.length, 1);
      assert.deepEqual(
        { length: extents[0]!.length, zero: extents[0]!.zero, allocated: extents[0]!.allocated },
        { length: 1024 * TiB, zero: true, allocated: false },
      );

      const big = path.join(dir, 'big.qcow2');
      await createImage({ filename: big, format: 'qcow2', size: 64 * TiB });
      const map = await bounded('map of an empty 64 TiB image', () => mapImage(big));
      assert.equal(map.length, 1);
      const same = await bounded('compare of an empty 64 TiB image', () => compareImages(big, big));
      assert.equal(same.identical, true);
      const raw = path.join(dir, 'big.raw');
      await bounded('convert of an empty 8 TiB image', async () => {
        const eight = path.join(dir, 'eight.qcow2');
        await createImage({ filename: eight, format: 'qcow2', size: 8 * TiB });
        await convertImage({ source: eight, target: raw, targetFormat: 'raw' });
      });
      const st = await stat(raw);
      assert.equal(st.size, 8 * TiB);
      assert.ok(st.blocks * 512 < 1024 * 1024, 'the converted empty image is sparse');
    });
  });
});
