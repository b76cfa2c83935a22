/**
 * Snapshot operations on images whose snapshots lie: a snapshot's L2 table that names the
 * refcount table as data, or a cluster whose refcount is 0. Applying or deleting such a snapshot
 * must fail with one clear line and leave the file as it was, byte for byte: nothing is checked
 * halfway, after refcounts already changed.
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';
import { hasTool, runOk } from '../helpers/tools.js';

const QEMU = hasTool('qemu-img') && hasTool('qemu-io');

/**
 * Sets entry 0 of the L2 table the (first) snapshot's L1 entry 0 names. Writes after the
 * snapshot made the image copy that table, so only the snapshot names it.
 */
async function forgeSnapshotEntry(image: string, entry: (header: Buffer) => bigint): Promise<void> {
  const handle = await open(image, 'r+');
  try {
    const header = Buffer.alloc(72);
    await handle.read(header, 0, 72, 0);
    const table = Buffer.alloc(8);
    await handle.read(table, 0, 8, Number(header.readBigUInt64BE(64)));
    const l1 = Buffer.alloc(8);
    await handle.read(l1, 0, 8, Number(table.readBigUInt64BE(0)));
    const l2 = Number(l1.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    const value = Buffer.alloc(8);
    value.writeBigUInt64BE(entry(header));
    await handle.write(value, 0, 8, l2);
  } finally {
    await handle.close();
  }
}

const LIES: { name: string; entry: (header: Buffer) => bigint; message: RegExp }[] = [
  {
    name: 'names the refcount table as data',
    entry: (header) => header.readBigUInt64BE(48),
    message: /names the image's metadata/,
  },
  {
    name: 'names a cluster whose refcount is 0',
    entry: () => 0x7f0000n,
    message: /refcount is 0/,
  },
];

describe('snapshot operations on lying snapshots', { skip: !QEMU && 'qemu-img not installed' }, () => {
  for (const lie of LIES) {
    it(`a snapshot that ${lie.name} is neither applied nor deleted, and nothing changes`, async () => {
      await withTempDir(async (dir) => {
        const image = join(dir, 'disk.qcow2');
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
        runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 128k', '-c', 'write -P 2 9M 64k', image]);
        runOk('qemu-img', ['snapshot', '-c', 'liar', image]);
        runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 0 64k', image]);
        await forgeSnapshotEntry(image, lie.entry);
        const before = await fileState(image);
        for (const args of [
          ['-a', 'liar'],
          ['-d', 'liar'],
        ]) {
          const r = await vdisk(['snapshot', ...args, image]);
          assert.equal(r.code, 1, `snapshot ${args.join(' ')}`);
          assert.match(r.stderr, lie.message);
          assert.equal(r.stderr.split('\n').length, 2, 'one line');
          assert.deepEqual(await fileState(image), before, `snapshot ${args.join(' ')}: the file is unchanged`);
        }
        // The lie is in the snapshot only: the image still takes new snapshots and writes.
        const r = await vdisk(['snapshot', '-c', 'fine', image]);
        assert.equal(r.code, 0, r.stderr);
      });
    });
  }
});
