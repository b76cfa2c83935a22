/**
 * Writes after a snapshot never change what the snapshot keeps: a cluster the snapshot shares
 * (refcount above 1, no COPIED flag in the image's L2 entry) is copied to a new cluster first,
 * and so is an L2 table the snapshot shares. An L2 table shared with a snapshot whose entries
 * wrongly claim COPIED (as an image from another tool may have them) still gets a copy whose
 * entries do not: the write goes to a new cluster, not into the snapshot's.
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { hasTool, run, runOk } from '../helpers/tools.js';

const QEMU = hasTool('qemu-img') && hasTool('qemu-io');

/** Sets the COPIED bit of every entry of the active image's first L2 table (a raw edit). */
async function forgeCopiedFlags(image: string): Promise<void> {
  const handle = await open(image, 'r+');
  try {
    const header = Buffer.alloc(48);
    await handle.read(header, 0, 48, 0);
    const clusterSize = 2 ** header.readUInt32BE(20);
    const l1 = Buffer.alloc(8);
    await handle.read(l1, 0, 8, Number(header.readBigUInt64BE(40)));
    const l2Offset = Number(l1.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    const l2 = Buffer.alloc(clusterSize);
    await handle.read(l2, 0, clusterSize, l2Offset);
    for (let off = 0; off < clusterSize; off += 8) {
      if (l2.readBigUInt64BE(off) !== 0n) l2[off] = l2[off]! | 0x80;
    }
    await handle.write(l2, 0, clusterSize, l2Offset);
  } finally {
    await handle.close();
  }
}

function snapshotReads(image: string, name: string, pattern: number, length: string): void {
  const out = `${image}.${name}.raw`;
  runOk('qemu-img', ['convert', '-f', 'qcow2', '-l', name, '-O', 'raw', image, out]);
  const check = run('qemu-io', ['-f', 'raw', '-c', `read -P ${pattern} 0 ${length}`, out]);
  assert.ok(!/verification failed/i.test(check.stdout), `snapshot ${name} changed: ${check.stdout}`);
}

describe('copy-on-write of clusters a snapshot shares', { skip: !QEMU && 'qemu-img not installed' }, () => {
  it('writes into shared clusters and tables leave the snapshot as it was', async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, 'disk.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1M']);
      runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 256k', image]);
      runOk('qemu-img', ['snapshot', '-c', 'keep', image]);
      const r = await vdisk([
        'io',
        '-c',
        'write -P 0x01 0 4k',
        '-c',
        'write -P 0x02 64k 64k',
        '-c',
        'write -z 128k 64k',
        image,
      ]);
      assert.equal(r.code, 0, r.stderr);
      snapshotReads(image, 'keep', 0x5a, '256k');
      assert.equal(run('qemu-img', ['check', image]).status, 0);
      runOk('qemu-io', [
        '-f',
        'qcow2',
        '-c',
        'read -P 0x01 0 4k',
        '-c',
        'read -P 0x5a 4k 60k',
        '-c',
        'read -P 0x02 64k 64k',
        image,
      ]);
    });
  });

  it('a shared L2 table whose entries claim COPIED is copied without the flags', async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, 'disk.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1M']);
      runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 256k', image]);
      runOk('qemu-img', ['snapshot', '-c', 'keep', image]);
      await forgeCopiedFlags(image);
      const r = await vdisk(['io', '-c', 'write -P 0x01 0 4k', '-c', 'write -P 0x02 64k 64k', image]);
      assert.equal(r.code, 0, r.stderr);
      snapshotReads(image, 'keep', 0x5a, '256k');
      const read = run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x01 0 4k', '-c', 'read -P 0x02 64k 64k', image]);
      assert.ok(!/verification failed/i.test(read.stdout), read.stdout);
    });
  });
});
