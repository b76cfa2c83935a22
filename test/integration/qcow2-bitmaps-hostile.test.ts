/**
 * Hostile bitmap directories: what a bitmap entry claims is bounded by what the file holds. A
 * bitmap in use whose table is as large as QEMU allows and lies past the end of the file opens
 * (QEMU opens it too) without reading or holding that table; a consistent bitmap whose table has
 * the wrong size, or an invalid entry, is refused as QEMU refuses it; tables that add up to more
 * than the file are refused. Nothing is written to a refused image.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { changeBitmap, createImage, isVdiskError, openImage } from '../../src/index.js';
import { withTempDir } from '../helpers/tmp.js';

const EXT_BITMAPS = Buffer.from([0x23, 0x85, 0x28, 0x75]);

/** A 64 MiB image (512-byte clusters: the largest tables) with bitmaps b0.., written at 1 MiB. */
async function base(dir: string, count = 1): Promise<{ file: string; bytes: Buffer; dir: number }> {
  const file = path.join(dir, 'img.qcow2');
  await createImage({ filename: file, format: 'qcow2', size: '64M', options: 'cluster_size=512' });
  for (let i = 0; i < count; i++) {
    await changeBitmap(file, `b${i}`, { format: 'qcow2', actions: [{ op: 'add' }], granularity: 512 });
  }
  const image = await openImage(file, { format: 'qcow2' });
  await image.write(1024 * 1024, Buffer.alloc(4096, 1));
  await image.close();
  const bytes = await readFile(file);
  const ext = bytes.indexOf(EXT_BITMAPS);
  return { file, bytes, dir: Number(bytes.readBigUInt64BE(ext + 8 + 16)) };
}

async function refused(file: string, pattern: RegExp): Promise<void> {
  const before = await readFile(file);
  for (const readOnly of [true, false]) {
    await assert.rejects(openImage(file, { format: 'qcow2', readOnly }), (err) => {
      assert.ok(isVdiskError(err) && err.code === 'ECORRUPT', String(err));
      assert.match(err.message, pattern);
      return true;
    });
  }
  assert.ok(before.equals(await readFile(file)));
}

describe('hostile bitmap directories', () => {
  it('an in-use bitmap with the largest table, past the end of the file, opens and is left alone', async () => {
    await withTempDir(async (dir) => {
      const b = await base(dir);
      b.bytes.writeBigUInt64BE(2n ** 50n, b.dir); // table offset
      b.bytes.writeUInt32BE(0x20000000 / 512, b.dir + 8); // table size: QEMU's largest
      b.bytes.writeUInt32BE(3, b.dir + 12); // in use, auto
      await writeFile(b.file, b.bytes);
      const image = await openImage(b.file, { format: 'qcow2' });
      assert.deepEqual(image.describe().bitmaps, [{ name: 'b0', granularity: 512, flags: ['in-use', 'auto'] }]);
      await image.write(0, Buffer.alloc(512, 2));
      await image.close();
      const after = await readFile(b.file);
      assert.equal(after.readUInt32BE(b.dir + 12), 3);
      assert.equal(after.readBigUInt64BE(b.dir), 2n ** 50n);
    });
  });

  it('a consistent bitmap whose table has the wrong size is refused', async () => {
    await withTempDir(async (dir) => {
      const b = await base(dir);
      b.bytes.writeUInt32BE(b.bytes.readUInt32BE(b.dir + 8) + 1, b.dir + 8);
      await writeFile(b.file, b.bytes);
      await refused(b.file, /Could not read bitmap 'b0' from image/);
    });
  });

  it('an invalid table entry is refused', async () => {
    await withTempDir(async (dir) => {
      const b = await base(dir);
      const table = Number(b.bytes.readBigUInt64BE(b.dir));
      b.bytes.writeUInt32BE(0x01000000, table); // a reserved bit
      await writeFile(b.file, b.bytes);
      await refused(b.file, /Could not read bitmap_table table from image for bitmap 'b0'/);
    });
  });

  it('tables that add up to more than the file holds are refused', async () => {
    await withTempDir(async (dir) => {
      const b = await base(dir, 2);
      // Both in-use bitmaps name one table of QEMU's largest size, which fits in the file once.
      const tableBytes = (0x20000000 / 512) * 8;
      for (const entry of [b.dir, b.dir + 32]) {
        b.bytes.writeBigUInt64BE(512n, entry);
        b.bytes.writeUInt32BE(0x20000000 / 512, entry + 8);
        b.bytes.writeUInt32BE(3, entry + 12);
      }
      await writeFile(b.file, Buffer.concat([b.bytes, Buffer.alloc(tableBytes)]));
      await refused(b.file, /The bitmap tables add up to more than the image file holds/);
    });
  });
});
