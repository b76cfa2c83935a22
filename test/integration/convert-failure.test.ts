/**
 * A convert that fails leaves an existing target as it was and says which side failed: a source
 * that does not open, one whose data does not read, one whose tables are broken (caught before
 * the target is touched, also with -n, which writes in place), and a target that cannot be made.
 */
import assert from 'node:assert/strict';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { convertImage, createImage, openImage } from '../../src/index.js';
import { vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

/** A 4 MiB qcow2 with data in every cluster, and the host offset of the L2 table. */
async function sourceImage(file: string, compressedLast = false): Promise<number> {
  await createImage({ filename: file, format: 'qcow2', size: 4 * MiB });
  const backend = await openImage(file, { format: 'qcow2' });
  try {
    await backend.write(0, Buffer.alloc(4 * MiB - 65536, 0x61));
    const last = Buffer.alloc(65536, 0x62);
    if (compressedLast) await backend.writeCompressed(4 * MiB - 65536, last);
    else await backend.write(4 * MiB - 65536, last);
  } finally {
    await backend.close();
  }
  const handle = await open(file, 'r');
  try {
    const header = Buffer.alloc(48);
    await handle.read(header, 0, 48, 0);
    const l1 = Buffer.alloc(8);
    await handle.read(l1, 0, 8, Number(header.readBigUInt64BE(40)));
    return Number(l1.readBigUInt64BE(0) & 0x00fffffffffffe00n);
  } finally {
    await handle.close();
  }
}

async function patch(file: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

/** An old target with its own content, to see that a failure leaves it alone. */
async function oldTarget(dir: string): Promise<string> {
  const target = join(dir, 'old.raw');
  await writeFile(target, Buffer.alloc(4 * MiB, 0x5a));
  return target;
}

describe('a convert that fails', () => {
  it('leaves the target alone when the source does not open, and says so', () =>
    withTempDir(async (dir) => {
      const target = await oldTarget(dir);
      const before = await fileState(target);
      const r = await vdisk(['convert', '-O', 'raw', join(dir, 'missing.qcow2'), target]);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr,
        `vdisk: source: Could not open '${join(dir, 'missing.qcow2')}': No such file or directory\n`,
      );
      assert.deepEqual(await fileState(target), before);
    }));

  it('leaves the target alone when source data does not read halfway', () =>
    withTempDir(async (dir) => {
      const source = join(dir, 'source.qcow2');
      const l2 = await sourceImage(source, true);
      // The last cluster's compressed stream (64 KiB clusters: 54 offset bits), overwritten with
      // bytes that do not inflate.
      const handle = await open(source, 'r');
      const entry = Buffer.alloc(8);
      await handle.read(entry, 0, 8, l2 + 63 * 8);
      await handle.close();
      const host = Number(entry.readBigUInt64BE(0) & ((1n << 54n) - 1n));
      await patch(source, host, Buffer.alloc(64, 0xff));
      const target = await oldTarget(dir);
      const before = await fileState(target);
      const r = await vdisk(['convert', '-O', 'raw', source, target]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^vdisk: source: error while reading at byte \d+: Compressed cluster at 0x[0-9a-f]+ /);
      assert.deepEqual(await fileState(target), before);
    }));

  it('reads the source tables whole before writing in place (-n)', () =>
    withTempDir(async (dir) => {
      const source = join(dir, 'source.qcow2');
      const l2 = await sourceImage(source);
      // The last L2 entry names an unaligned cluster: the source fails at its end, not its start.
      const entry = Buffer.alloc(8);
      entry.writeBigUInt64BE(0x8000000000000000n | 0x50200n);
      await patch(source, l2 + 63 * 8, entry);
      const target = await oldTarget(dir);
      const before = await fileState(target);
      const r = await vdisk(['convert', '-n', '-O', 'raw', source, target]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^vdisk: source: error while reading: Cluster allocation offset 0x50200 unaligned/);
      assert.deepEqual(await fileState(target), before, 'the target was not written');
      await assert.rejects(
        convertImage({ source, target, targetFormat: 'raw' }),
        (err: unknown) => err instanceof VdiskError && err.code === 'ECORRUPT' && err.message.startsWith('source: '),
      );
      assert.deepEqual(await fileState(target), before);
    }));

  it('leaves the target alone when the target cannot be made, and says so', () =>
    withTempDir(async (dir) => {
      const source = join(dir, 'source.qcow2');
      await sourceImage(source);
      const target = await oldTarget(dir);
      const before = await fileState(target);
      const bad = await vdisk(['convert', '-O', 'qcow2', '-o', 'cluster_size=3', source, target]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /^vdisk: target: .*Cluster size must be a power of two/);
      const compressed = await vdisk(['convert', '-c', '-O', 'raw', source, target]);
      assert.equal(compressed.code, 1);
      assert.equal(compressed.stderr, 'vdisk: target: Compression is not supported for the raw format\n');
      assert.deepEqual(await fileState(target), before);
    }));
});
