/**
 * `vdisk map --output=json` prints exactly what `qemu-img map --output=json` prints for the same
 * image: host holes under preallocated metadata ("zero": true, "data": true), offsets of zero
 * clusters that keep their host cluster and of extended-L2 subclusters, backing chains, and a
 * convert from a preallocated image that reads only what the host file holds.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openImage } from '../../src/engine/open.js';
import { convertImage } from '../../src/tools/convert.js';
import { vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { hasTool, runOk } from '../helpers/tools.js';

const QEMU = hasTool('qemu-img') && hasTool('qemu-io');
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; map interop tests do not run');

interface Case {
  name: string;
  /** qemu-img create arguments after `-f qcow2` (the file name is added). */
  create: string[];
  size: string;
  io: string[];
  /** A backing image made first: [create options, size, qemu-io commands]. */
  base?: { create: string[]; size: string; io: string[] };
}

const CASES: Case[] = [
  { name: 'metadata preallocation', create: ['-o', 'preallocation=metadata'], size: '64M', io: ['write -P 1 1M 64k'] },
  {
    name: 'metadata preallocation, 4k clusters, data at both ends',
    create: ['-o', 'preallocation=metadata,cluster_size=4k'],
    size: '8M',
    io: ['write -P 1 0 12k', 'write -P 2 8188k 4k', 'write -z 4M 64k'],
  },
  { name: 'falloc preallocation', create: ['-o', 'preallocation=falloc'], size: '8M', io: ['write -P 1 1M 64k'] },
  { name: 'full preallocation', create: ['-o', 'preallocation=full'], size: '8M', io: ['write -P 1 1M 64k'] },
  {
    name: 'zero clusters with and without their host cluster',
    create: [],
    size: '8M',
    io: ['write -P 1 0 256k', 'write -z 64k 64k', 'write -z -u 128k 64k', 'write -P 2 1M 64k', 'discard 1M 64k'],
  },
  {
    name: 'extended L2 subclusters',
    create: ['-o', 'extended_l2=on'],
    size: '8M',
    io: ['write -P 1 0 4k', 'write -P 2 68k 8k', 'write -z 200k 8k', 'write -P 3 1M 64k', 'write -z 1M 4k'],
  },
  {
    name: 'extended L2 over a backing image',
    create: ['-o', 'extended_l2=on'],
    size: '8M',
    io: ['write -P 9 8k 4k', 'write -z 1028k 4k'],
    base: { create: ['-o', 'extended_l2=on'], size: '8M', io: ['write -P 1 0 4k', 'write -P 3 1M 64k'] },
  },
  {
    name: 'an overlay larger than its backing image',
    create: [],
    size: '8M',
    io: ['write -P 9 6M 64k'],
    base: { create: [], size: '2M', io: ['write -P 1 0 1M'] },
  },
  { name: 'compat=0.10', create: ['-o', 'compat=0.10'], size: '8M', io: ['write -P 1 0 64k', 'write -z 1M 64k'] },
];

async function qemuMap(image: string): Promise<unknown> {
  return JSON.parse(runOk('qemu-img', ['map', '--output=json', image]));
}

describe('map --output=json as qemu-img prints it', { skip: !QEMU && 'qemu-img not installed' }, () => {
  for (const c of CASES) {
    it(c.name, () =>
      withTempDir(async (dir) => {
        const image = join(dir, 'image.qcow2');
        const backing: string[] = [];
        if (c.base) {
          const base = join(dir, 'base.qcow2');
          runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...c.base.create, base, c.base.size]);
          if (c.base.io.length) runOk('qemu-io', ['-f', 'qcow2', ...c.base.io.flatMap((x) => ['-c', x]), base]);
          backing.push('-b', base, '-F', 'qcow2');
        }
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...c.create, ...backing, image, c.size]);
        runOk('qemu-io', ['-f', 'qcow2', ...c.io.flatMap((x) => ['-c', x]), image]);
        const ours = await vdisk(['map', '--output=json', image]);
        assert.equal(ours.code, 0, ours.stderr);
        assert.deepEqual(JSON.parse(ours.stdout), await qemuMap(image));
        assert.equal(ours.stdout, runOk('qemu-img', ['map', '--output=json', image]), 'the same text');
        const human = await vdisk(['map', image]);
        assert.equal(human.stdout, runOk('qemu-img', ['map', image]), 'the same human output');
      }),
    );
  }

  it('convert of a preallocated image reads only what the host file holds', () =>
    withTempDir(async (dir) => {
      const image = join(dir, 'prealloc.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', image, '256M']);
      runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 100M 1M', image]);
      const source = await openImage(image, { format: 'qcow2', readOnly: true });
      let zeroBytes = 0;
      try {
        for await (const e of source.extents()) if (e.zero) zeroBytes += e.length;
      } finally {
        await source.close();
      }
      assert.equal(zeroBytes, 255 << 20, 'block status says the holes read as zeros');
      const target = join(dir, 'out.raw');
      await convertImage({ source: image, target, targetFormat: 'raw' });
      const expected = join(dir, 'expected.raw');
      runOk('qemu-img', ['convert', '-O', 'raw', image, expected]);
      assert.ok((await readFile(target)).equals(await readFile(expected)));
    }));
});
