/**
 * qcow2 both ways, with QEMU's tools as the oracle: images qemu-img makes (every create option)
 * and qemu-io fills read in vdisk exactly as `qemu-img convert -O raw` reads them; images vdisk
 * makes and writes pass `qemu-img check` and compare identical; preallocated images map alike.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openImage } from '../../src/engine/open.js';
import { createImage } from '../../src/tools/create.js';
import { mapImage } from '../../src/tools/map.js';
import { hasTool, run, runOk } from '../helpers/tools.js';

const QEMU = hasTool('qemu-img') && hasTool('qemu-io');
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; qcow2 interop tests do not run');

const SIZE = 8 * 1024 * 1024;

const CREATE_OPTIONS = [
  'compat=1.1',
  'compat=0.10',
  'cluster_size=512',
  'cluster_size=4096,refcount_bits=1',
  'cluster_size=2M',
  'refcount_bits=64',
  'lazy_refcounts=on',
  'extended_l2=on',
  'extended_l2=on,cluster_size=16k',
  'preallocation=metadata',
  'preallocation=falloc',
  'preallocation=full',
  'compression_type=zstd',
];

/** qemu-io commands that leave data, zero clusters, discarded and compressed clusters. */
function fillCommands(compat: string): string[] {
  const cmds = [
    'write -P 0x11 0 100k',
    'write -P 0x22 1M 64k',
    'write -P 0x33 3000 5000',
    'write -z 2M 128k',
    'write -P 0x44 4M 1M',
    'discard 4M 512k',
    'write -c -P 0x55 6M 2M',
    'write -P 0x66 6200k 4k',
  ];
  // qemu-io cannot write compressed into preallocated clusters; v2 has no zero clusters.
  return cmds.filter(
    (c) =>
      !(compat === 'compat=0.10' && c.startsWith('write -z')) &&
      !(compat.startsWith('preallocation') && c.startsWith('write -c')),
  );
}

describe('qcow2 interop', { skip: !QEMU && 'qemu-img not installed' }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vdisk-qcow2-interop-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const options of CREATE_OPTIONS) {
    it(`reads what qemu-img and qemu-io wrote (${options})`, async () => {
      const image = join(dir, `q-${options.replace(/[=,]/g, '_')}.qcow2`);
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, image, String(SIZE)]);
      const args = fillCommands(options).flatMap((c) => ['-c', c]);
      runOk('qemu-io', ['-f', 'qcow2', ...args, image]);
      const raw = join(dir, 'expected.raw');
      runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
      const expected = await readFile(raw);
      const backend = await openImage(image, { format: 'qcow2', readOnly: true });
      try {
        const got = await backend.read(0, SIZE);
        assert.ok(got.equals(expected), 'vdisk reads what qemu-img convert reads');
      } finally {
        await backend.close();
      }
    });
  }

  for (const options of CREATE_OPTIONS) {
    it(`writes images qemu-img accepts (${options})`, async () => {
      const image = join(dir, `v-${options.replace(/[=,]/g, '_')}.qcow2`);
      await createImage({ filename: image, format: 'qcow2', size: SIZE, options });
      const backend = await openImage(image, { format: 'qcow2' });
      const model = Buffer.alloc(SIZE);
      const put = async (offset: number, length: number, byte: number) => {
        await backend.write(offset, Buffer.alloc(length, byte));
        model.fill(byte, offset, offset + length);
      };
      try {
        await put(0, 100 * 1024, 0x11);
        await put(1 << 20, 65536, 0x22);
        await put(3000, 5000, 0x33);
        await backend.writeZeroes(50 * 1024, 8 * 1024);
        model.fill(0, 50 * 1024, 58 * 1024);
        await put(4 << 20, 1 << 20, 0x44);
        // Whole clusters of a discard read as zeros afterwards; partial ones keep their data.
        const cs = backend.describe().clusterSize ?? 65536;
        await backend.discard(4 << 20, 512 * 1024);
        const discardEnd = Math.floor(((4 << 20) + 512 * 1024) / cs) * cs;
        model.fill(0, 4 << 20, Math.max(4 << 20, discardEnd));
        if (!options.includes('preallocation')) {
          const compressed = Buffer.alloc(cs, 0x55);
          compressed.write('vdisk', 7);
          await backend.writeCompressed(6 << 20, compressed);
          compressed.copy(model, 6 << 20);
        }
        await backend.writeZeroes(7 << 20, 1 << 20, { mayUnmap: true });
        model.fill(0, 7 << 20, 8 << 20);
      } finally {
        await backend.close();
      }
      const check = run('qemu-img', ['check', image]);
      assert.equal(check.status, 0, `qemu-img check: ${check.stdout}${check.stderr}`);
      const raw = join(dir, 'model.raw');
      const { writeFile } = await import('node:fs/promises');
      await writeFile(raw, model);
      const compare = run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, raw]);
      assert.equal(compare.status, 0, compare.stdout + compare.stderr);
    });
  }

  it('writes only the guest bytes into fresh clusters, and zeros a reused one', async () => {
    const image = join(dir, 'fresh.qcow2');
    await createImage({ filename: image, format: 'qcow2', size: SIZE });
    const model = Buffer.alloc(SIZE);
    for (const cache of ['writeback', 'none'] as const) {
      const backend = await openImage(image, { format: 'qcow2', cache });
      try {
        const put = async (offset: number, byte: number) => {
          await backend.write(offset, Buffer.alloc(4096, byte));
          model.fill(byte, offset, offset + 4096);
        };
        if (cache === 'writeback') {
          // Two first writes in the middle of fresh clusters: nothing else is written, so the
          // file ends inside the last cluster (which check allows, as QEMU's does).
          await put(32 * 1024, 0x61);
          await put((3 << 20) + 12 * 1024, 0x62);
          await backend.flush();
          const { size } = await import('node:fs/promises').then((f) => f.stat(image));
          assert.notEqual(size % 65536, 0, `the file ends inside its last cluster (${size} bytes)`);
          // A whole cluster of data, then discarded: its host cluster is free for reuse.
          await backend.write(5 << 20, Buffer.alloc(65536, 0x77));
          await backend.discard(5 << 20, 65536);
        } else {
          // Lands in a reused cluster (or a new one): everything around the 4 KiB reads as zeros.
          await put((6 << 20) + 8192, 0x63);
          await put(32 * 1024 + 4096, 0x64);
        }
      } finally {
        await backend.close();
      }
    }
    const check = run('qemu-img', ['check', image]);
    assert.equal(check.status, 0, `qemu-img check: ${check.stdout}${check.stderr}`);
    const raw = join(dir, 'fresh-model.raw');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(raw, model);
    const compare = run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, raw]);
    assert.equal(compare.status, 0, compare.stdout + compare.stderr);
  });

  for (const clusterSize of [65536, 512]) {
    it(`under cache=none grows the file ahead of concurrent first writes (cluster_size=${clusterSize})`, async () => {
      const image = join(dir, `fresh-direct-${clusterSize}.qcow2`);
      await createImage({ filename: image, format: 'qcow2', size: SIZE, options: { cluster_size: clusterSize } });
      const model = Buffer.alloc(SIZE);
      const backend = await openImage(image, { format: 'qcow2', cache: 'none' });
      try {
        // 4 KiB writes at scattered offsets, all in flight at once, into fresh clusters (with
        // 512-byte clusters, new refcount blocks and a bigger refcount table land among them).
        const count = clusterSize === 512 ? 1200 : 48;
        const offsets = Array.from({ length: count }, (_, i) => ((i * 7919) % (SIZE / 4096)) * 4096);
        await Promise.all(
          offsets.map((offset, i) => {
            const data = Buffer.alloc(4096, 0x20 + (i % 200));
            data.copy(model, offset);
            return backend.write(offset, data);
          }),
        );
        await backend.flush();
        const { size } = await import('node:fs/promises').then((f) => f.stat(image));
        assert.equal(size % clusterSize, 0, `fresh clusters were grown whole (${size} bytes)`);
      } finally {
        await backend.close();
      }
      const check = run('qemu-img', ['check', image]);
      assert.equal(check.status, 0, `qemu-img check: ${check.stdout}${check.stderr}`);
      const raw = join(dir, `fresh-direct-${clusterSize}.raw`);
      const { writeFile } = await import('node:fs/promises');
      await writeFile(raw, model);
      const compare = run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, raw]);
      assert.equal(compare.status, 0, compare.stdout + compare.stderr);
    });
  }

  for (const preallocation of ['off', 'metadata', 'falloc', 'full']) {
    it(`maps a vdisk-made image like a qemu-img-made one (preallocation=${preallocation})`, async () => {
      const ours = join(dir, `m-vdisk-${preallocation}.qcow2`);
      const theirs = join(dir, `m-qemu-${preallocation}.qcow2`);
      await createImage({ filename: ours, format: 'qcow2', size: SIZE, options: `preallocation=${preallocation}` });
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `preallocation=${preallocation}`, theirs, String(SIZE)]);
      const shape = (file: string) =>
        (JSON.parse(runOk('qemu-img', ['map', '--output=json', file])) as Record<string, unknown>[]).map(
          ({ start, length, present, zero, data }) => ({ start, length, present, zero, data }),
        );
      assert.deepEqual(shape(ours), shape(theirs));
      assert.equal((await readFile(ours)).length, (await readFile(theirs)).length, 'same file length');
    });
  }

  it('reads a backing chain and writes copy-on-write into the overlay', async () => {
    const base = join(dir, 'chain-base.qcow2');
    const mid = join(dir, 'chain-mid.qcow2');
    const top = join(dir, 'chain-top.qcow2');
    runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
    runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x01 0 2M', base]);
    runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'chain-base.qcow2', '-F', 'qcow2', mid]);
    runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x02 1M 64k', mid]);
    await createImage({ filename: top, format: 'qcow2', options: 'backing_file=chain-mid.qcow2,backing_fmt=qcow2' });
    const backend = await openImage(top, { format: 'qcow2' });
    try {
      assert.equal(backend.length, SIZE);
      await backend.write((1 << 20) + 100, Buffer.alloc(10, 0x03));
    } finally {
      await backend.close();
    }
    const io = run('qemu-io', [
      '-f',
      'qcow2',
      '-c',
      'read -P 0x01 0 1M',
      '-c',
      'read -P 0x02 1M 100',
      '-c',
      'read -P 0x03 1048676 10',
      '-c',
      'read -P 0x02 1048686 65426',
      '-c',
      'read -P 0x00 2M 6M',
      top,
    ]);
    assert.equal(io.status, 0, io.stdout + io.stderr);
    assert.doesNotMatch(io.stdout, /verification failed/);
    assert.equal(run('qemu-img', ['check', top]).status, 0);
    const qemuMap = JSON.parse(runOk('qemu-img', ['map', '--output=json', top]));
    const reopened = await openImage(top, { format: 'qcow2', readOnly: true });
    try {
      const ours = (await mapImage(reopened)).map(({ filename: _f, ...e }) => e);
      assert.deepEqual(ours, qemuMap);
    } finally {
      await reopened.close();
    }
  });
});
