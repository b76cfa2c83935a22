/**
 * `vdisk check` against qemu-img check 7.2. Images made by qemu-img and qemu-io (plain,
 * compressed, with snapshots, v2, extended L2, odd cluster and refcount sizes, preallocated,
 * with a backing file or a bitmap) check clean in both, with the same text and JSON. Images
 * damaged here give the same exit status as qemu-img check, with and without -r leaks (and the
 * same messages where vdisk does not knowingly differ); after `vdisk check -r all` qemu-img check
 * finds them clean and the data written before reads back. A lazy-refcount image killed in the
 * middle of a write opens writable in vdisk (which repairs it) and is then clean for qemu-img.
 */
import assert from 'node:assert/strict';
import { copyFile, open } from 'node:fs/promises';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { decodeHeader } from '../../src/format/qcow2/codec/header.js';
import { hasCommand, run, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const HAVE_QEMU = hasCommand('qemu-img') && hasCommand('qemu-io');
if (!HAVE_QEMU) console.warn('SKIPPED: qemu-img or qemu-io is not installed: vdisk check was not compared with QEMU');

function needQemu(t: TestContext): boolean {
  if (!HAVE_QEMU) t.skip('qemu-img or qemu-io is not installed');
  return HAVE_QEMU;
}

async function ok(command: string, args: string[]): Promise<string> {
  const r = await run(command, args);
  assert.equal(r.code, 0, `${command} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

interface Checked {
  code: number;
  text: string;
}

async function qemuCheck(file: string, args: string[] = []): Promise<Checked> {
  const r = await run('qemu-img', ['check', ...args, file]);
  return { code: r.code, text: r.stderr.replace(/^qemu-img: /gm, 'vdisk: ') + r.stdout };
}

async function vdiskCheck(file: string, args: string[] = []): Promise<Checked> {
  const r = await vdisk(['check', ...args, file]);
  return { code: r.code, text: r.stderr + r.stdout };
}

/** 64 MiB image, 0xaa over the first MiB, made by qemu-img and qemu-io. */
async function makeImage(file: string, createOptions: string[] = [], io: string[] = []): Promise<void> {
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', ...createOptions, file, '64M']);
  const commands = ['write -P 0xaa 0 1M', ...io].flatMap((c) => ['-c', c]);
  await ok('qemu-io', [...commands, file]);
}

async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

async function writeU64(file: string, offset: number, value: bigint): Promise<void> {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64BE(value);
  const fh = await open(file, 'r+');
  try {
    await fh.write(buf, 0, 8, offset);
  } finally {
    await fh.close();
  }
}

async function writeU16(file: string, offset: number, value: number): Promise<void> {
  const buf = Buffer.alloc(2);
  buf.writeUInt16BE(value);
  const fh = await open(file, 'r+');
  try {
    await fh.write(buf, 0, 2, offset);
  } finally {
    await fh.close();
  }
}

/** Where the first refcount block, the L1 table and the first L2 table are. */
async function layout(file: string): Promise<{ reftable: number; refblock: number; l1: number; l2: number }> {
  const h = decodeHeader(await readAt(file, 0, 65536));
  const refblock = Number((await readAt(file, h.refcountTableOffset, 8)).readBigUInt64BE() & ~0x1ffn);
  const l2 = Number((await readAt(file, h.l1TableOffset, 8)).readBigUInt64BE() & 0x00fffffffffffe00n);
  return { reftable: h.refcountTableOffset, refblock, l1: h.l1TableOffset, l2 };
}

interface Damage {
  name: string;
  damage: (file: string) => Promise<void>;
  /** Guest ranges [offset, length, pattern] that read as written after `vdisk check -r all`. */
  intact: [number, number, number][];
  /** vdisk prints exactly qemu-img's text without a repair and with -r leaks. */
  sameText: boolean;
}

const K64 = 65536;
const MiB = 1024 * 1024;
/** The image has 0xaa over its first MiB and 0xbb over 64 KiB at 4 MiB. */
const ALL: [number, number, number][] = [
  [0, MiB, 0xaa],
  [4 * MiB, K64, 0xbb],
];
const BUT_CLUSTER_3: [number, number, number][] = [
  [0, 3 * K64, 0xaa],
  [4 * K64, MiB - 4 * K64, 0xaa],
  [4 * MiB, K64, 0xbb],
];

const DAMAGES: Damage[] = [
  {
    name: 'a refcount one too high (leak)',
    damage: async (f) => writeU16(f, (await layout(f)).refblock + 2 * 6, 2),
    intact: ALL,
    sameText: true,
  },
  {
    name: 'a refcount of 0 for a data cluster',
    damage: async (f) => writeU16(f, (await layout(f)).refblock + 2 * 6, 0),
    intact: ALL,
    sameText: true,
  },
  {
    name: 'an L2 entry past the end of the file',
    damage: async (f) => writeU64(f, (await layout(f)).l2 + 3 * 8, 0x8000000010000000n),
    intact: BUT_CLUSTER_3,
    sameText: true,
  },
  {
    name: 'an L2 entry into the refcount table',
    damage: async (f) => {
      const l = await layout(f);
      await writeU64(f, l.l2 + 3 * 8, 0x8000000000000000n | BigInt(l.reftable));
    },
    intact: BUT_CLUSTER_3,
    sameText: true,
  },
  {
    name: 'an L2 entry with an unaligned offset',
    damage: async (f) => writeU64(f, (await layout(f)).l2 + 3 * 8, 0x8000000000070200n),
    intact: ALL,
    sameText: true,
  },
  {
    name: 'an L1 entry with an unaligned L2 table offset',
    damage: async (f) => {
      const l = await layout(f);
      await writeU64(f, l.l1, 0x8000000000000000n | BigInt(l.l2 + 0x200));
    },
    intact: ALL,
    sameText: false, // QEMU reads the table at the unaligned offset and reports its garbage
  },
  {
    name: 'an L1 entry past the end of the file',
    damage: async (f) => writeU64(f, (await layout(f)).l1, 0x8000000010000000n),
    intact: [],
    sameText: true,
  },
  {
    name: 'an unaligned refcount table entry',
    damage: async (f) => {
      const l = await layout(f);
      await writeU64(f, l.reftable, BigInt(l.refblock + 0x200));
    },
    intact: ALL,
    sameText: false, // QEMU marks the image corrupt with -r; vdisk does not
  },
  {
    name: 'a refcount table entry with reserved bits',
    damage: async (f) => {
      const l = await layout(f);
      await writeU64(f, l.reftable, BigInt(l.refblock + 1));
    },
    intact: ALL,
    sameText: true,
  },
  {
    name: 'a refcount table entry past the end of the file',
    damage: async (f) => writeU64(f, (await layout(f)).reftable, 0x10000000n),
    intact: ALL,
    sameText: true,
  },
  {
    name: 'a cleared refcount table entry',
    damage: async (f) => writeU64(f, (await layout(f)).reftable, 0n),
    intact: ALL,
    sameText: true,
  },
];

describe('vdisk check and qemu-img check on images made by QEMU', () => {
  const cases: { name: string; create?: string[]; io?: string[]; after?: (file: string) => Promise<void> }[] = [
    { name: 'plain' },
    { name: 'compressed clusters', io: ['write -c -P 0xbb 2M 64k', 'write -c -P 0 4M 128k'] },
    {
      name: 'internal snapshots',
      io: ['write -c -P 0xcc 4M 64k'],
      after: async (f) => {
        await ok('qemu-img', ['snapshot', '-c', 's1', f]);
        await ok('qemu-io', ['-c', 'write -P 0xbb 512k 1M', f]);
        await ok('qemu-img', ['snapshot', '-c', 's2', f]);
        await ok('qemu-io', ['-c', 'write -c -P 0xdd 8M 64k', f]);
      },
    },
    { name: 'version 2', create: ['-o', 'compat=0.10'], io: ['write -c -P 1 8M 128k'] },
    { name: 'extended L2', create: ['-o', 'extended_l2=on'], io: ['write -P 1 2M 10k', 'write -z 3M 64k'] },
    { name: '512-byte clusters', create: ['-o', 'cluster_size=512'], io: ['write -c -P 1 2M 4k'] },
    { name: '2 MiB clusters', create: ['-o', 'cluster_size=2M'], io: ['write -c -P 1 8M 2M'] },
    { name: '1-bit refcounts', create: ['-o', 'refcount_bits=1'] },
    { name: '64-bit refcounts', create: ['-o', 'refcount_bits=64'] },
    { name: 'metadata preallocation', create: ['-o', 'preallocation=metadata'] },
    { name: 'zero clusters', io: ['write -z 2M 1M', 'write -P 1 4M 64k', 'discard 4M 64k'] },
    {
      name: 'a persistent bitmap',
      after: async (f) => {
        await ok('qemu-img', ['bitmap', '--add', f, 'b0']);
        await ok('qemu-img', ['bitmap', '--add', '-g', '65536', f, 'b1']);
      },
    },
  ];
  for (const c of cases) {
    it(`prints what qemu-img prints for an image with ${c.name}`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        const file = path.join(dir, 'a.qcow2');
        await makeImage(file, c.create, c.io);
        await c.after?.(file);
        for (const args of [[], ['--output=json']]) {
          const q = await qemuCheck(file, args);
          const v = await vdiskCheck(file, args);
          assert.equal(q.code, 0, q.text);
          assert.deepEqual(v, q);
        }
      });
    });
  }

  it('checks an image with a backing file as qemu-img does', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      const base = path.join(dir, 'base.qcow2');
      const top = path.join(dir, 'top.qcow2');
      await makeImage(base);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
      await ok('qemu-io', ['-c', 'write -P 1 100k 10k', top]);
      assert.deepEqual(await vdiskCheck(top), await qemuCheck(top));
    });
  });
});

describe('vdisk check and qemu-img check on damaged images', () => {
  for (const d of DAMAGES) {
    it(`agrees with qemu-img on ${d.name}, and -r all leaves it clean`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        const original = path.join(dir, 'damaged.qcow2');
        await makeImage(original, [], ['write -P 0xbb 4M 64k']);
        await d.damage(original);
        for (const args of [[], ['-r', 'leaks']]) {
          const q = path.join(dir, 'q.qcow2');
          const v = path.join(dir, 'v.qcow2');
          await copyFile(original, q);
          await copyFile(original, v);
          const qr = await qemuCheck(q, args);
          const vr = await vdiskCheck(v, args);
          assert.equal(
            vr.code,
            qr.code,
            `exit status with [${args.join(' ')}]:\n${vr.text}\n--- qemu-img:\n${qr.text}`,
          );
          if (d.sameText) assert.equal(vr.text, qr.text, `messages with [${args.join(' ')}]`);
        }
        const v = path.join(dir, 'v.qcow2');
        await copyFile(original, v);
        const repaired = await vdiskCheck(v, ['-r', 'all']);
        assert.equal(repaired.code, 0, repaired.text);
        const after = await qemuCheck(v);
        assert.equal(after.code, 0, after.text);
        const reads = d.intact.flatMap(([offset, length, pattern]) => ['-c', `read -P ${pattern} ${offset} ${length}`]);
        if (reads.length > 0) await ok('qemu-io', ['-r', ...reads, v]);
      });
    });
  }
});

describe('dirty images with lazy refcounts', () => {
  async function crashedImage(file: string): Promise<void> {
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', file, '64M']);
    const r = await run('qemu-io', ['-c', 'write -P 0xaa 0 1M', '-c', 'sigraise 9', file]);
    assert.notEqual(r.code, 0, 'qemu-io was killed');
    const info = await ok('qemu-img', ['info', file]);
    assert.match(info, /cleanly shut down: no/);
  }

  it('checks and repairs a killed image as qemu-img does', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      const original = path.join(dir, 'dirty.qcow2');
      await crashedImage(original);
      for (const args of [[], ['-r', 'all']]) {
        const q = path.join(dir, 'q.qcow2');
        const v = path.join(dir, 'v.qcow2');
        await copyFile(original, q);
        await copyFile(original, v);
        assert.deepEqual(await vdiskCheck(v, args), await qemuCheck(q, args));
      }
      const v = path.join(dir, 'v.qcow2');
      assert.doesNotMatch(await ok('qemu-img', ['info', v]), /cleanly shut down/);
    });
  });

  it('opens a killed image writable (repairing it), and qemu-img then finds it clean', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'dirty.qcow2');
      await crashedImage(file);
      const r = await vdisk(['io', '-c', 'read -P 0xaa 0 1M', '-c', 'write -P 0xbb 1M 64k', file]);
      assert.equal(r.code, 0, r.stderr);
      const after = await qemuCheck(file);
      assert.equal(after.code, 0, after.text);
      assert.doesNotMatch(await ok('qemu-img', ['info', file]), /cleanly shut down/);
      await ok('qemu-io', ['-r', '-c', 'read -P 0xaa 0 1M', '-c', 'read -P 0xbb 1M 64k', file]);
    });
  });
});
