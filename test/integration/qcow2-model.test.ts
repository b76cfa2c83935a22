/**
 * Random sequences of writes, write-zeroes, discards, flushes and reopens on qcow2 images must
 * read back like a plain in-memory model, and the image must stay consistent for qemu-img check.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { BlockBackend } from '../../src/block/backend.js';
import { openImage } from '../../src/engine/open.js';
import { createImage } from '../../src/tools/create.js';
import { hasTool, run, runOk } from '../helpers/tools.js';

const SIZE = 4 * 1024 * 1024;

type Op =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'flush' }
  | { kind: 'reopen' };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 300_000 }))
  .map(([offset, length]) => ({ offset, length: Math.min(length, SIZE - offset) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(range, fc.integer({ min: 1, max: 250 }))
      .map(([r, seed]) => ({ kind: 'write' as const, ...r, seed })),
  },
  { weight: 2, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: 'zero' as const, ...r, unmap })) },
  { weight: 2, arbitrary: range.map((r) => ({ kind: 'discard' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
);

function fillPattern(buf: Buffer, offset: number, seed: number): void {
  for (let i = 0; i < buf.length; i++) buf[i] = ((offset + i) * 7 + seed) % 251 || 1;
}

interface Variant {
  clusterSize: number;
  refcountBits: number;
  backing: boolean;
  compat: '0.10' | '1.1';
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  preallocation?: 'metadata' | 'falloc' | 'full';
  /** A small L2 cache, so tables are evicted and written back all the time. */
  l2CacheSize?: number;
  /** Made by vdisk create instead of qemu-img create. */
  vdiskCreate?: boolean;
}

const VARIANTS: Variant[] = [
  { clusterSize: 65536, refcountBits: 16, backing: false, compat: '1.1' },
  { clusterSize: 4096, refcountBits: 1, backing: true, compat: '1.1' },
  { clusterSize: 512, refcountBits: 64, backing: false, compat: '1.1', l2CacheSize: 2048 },
  { clusterSize: 16384, refcountBits: 16, backing: true, compat: '0.10' },
  { clusterSize: 65536, refcountBits: 16, backing: true, compat: '1.1', extendedL2: true },
  { clusterSize: 65536, refcountBits: 16, backing: false, compat: '1.1', lazyRefcounts: true, vdiskCreate: true },
  { clusterSize: 4096, refcountBits: 4, backing: false, compat: '1.1', preallocation: 'metadata', vdiskCreate: true },
  { clusterSize: 8192, refcountBits: 16, backing: true, compat: '1.1', vdiskCreate: true },
  { clusterSize: 32768, refcountBits: 32, backing: false, compat: '1.1', preallocation: 'falloc', vdiskCreate: true },
];

describe('qcow2 against an in-memory model', { skip: !hasTool('qemu-img') && 'qemu-img not installed' }, () => {
  for (const v of VARIANTS) {
    const name = [
      `cluster ${v.clusterSize}, refcount_bits ${v.refcountBits}, compat ${v.compat}`,
      v.backing && 'backing',
      v.extendedL2 && 'extended L2',
      v.lazyRefcounts && 'lazy refcounts',
      v.preallocation && `preallocation=${v.preallocation}`,
      v.l2CacheSize && `l2-cache-size=${v.l2CacheSize}`,
      v.vdiskCreate ? 'made by vdisk' : 'made by qemu-img',
    ]
      .filter(Boolean)
      .join(', ');
    it(name, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'vdisk-model-'));
      try {
        await fc.assert(
          fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
            await runSequence(dir, v, ops);
          }),
          { numRuns: 12 },
        );
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});

async function runSequence(dir: string, v: Variant, ops: Op[]): Promise<void> {
  const image = join(dir, 'top.qcow2');
  const base = join(dir, 'base.raw');
  const model = Buffer.alloc(SIZE);
  await rm(image, { force: true });
  const options = [
    `cluster_size=${v.clusterSize}`,
    `refcount_bits=${v.refcountBits}`,
    `compat=${v.compat}`,
    ...(v.extendedL2 ? ['extended_l2=on'] : []),
    ...(v.lazyRefcounts ? ['lazy_refcounts=on'] : []),
    ...(v.preallocation ? [`preallocation=${v.preallocation}`] : []),
  ];
  const create = async (extra: string[], size?: number) => {
    if (v.vdiskCreate) {
      await createImage({ filename: image, format: 'qcow2', size, options: [...options, ...extra].join(',') });
    } else {
      runOk('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-o',
        [...options, ...extra].join(','),
        image,
        ...(size ? [String(size)] : []),
      ]);
    }
  };
  if (v.backing) {
    await rm(base, { force: true });
    runOk('qemu-img', ['create', '-q', '-f', 'raw', base, String(SIZE)]);
    runOk('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a 0 ${SIZE / 2}`, base]);
    model.fill(0x5a, 0, SIZE / 2);
    await create([`backing_file=${base}`, 'backing_fmt=raw'], SIZE);
  } else {
    await create([], SIZE);
  }

  let backend: BlockBackend = await openImage(image, { format: 'qcow2', l2CacheSize: v.l2CacheSize });
  try {
    for (const o of ops) {
      switch (o.kind) {
        case 'write': {
          const data = Buffer.alloc(o.length);
          fillPattern(data, o.offset, o.seed);
          await backend.write(o.offset, data);
          data.copy(model, o.offset);
          break;
        }
        case 'zero':
          await backend.writeZeroes(o.offset, o.length, { mayUnmap: o.unmap });
          model.fill(0, o.offset, o.offset + o.length);
          break;
        case 'discard': {
          await backend.discard(o.offset, o.length);
          // vdisk discards whole clusters only; in v3 they read as zeros, in v2 the backing shows.
          const cs = v.clusterSize;
          const start = Math.ceil(o.offset / cs) * cs;
          const end = o.offset + o.length === SIZE ? SIZE : Math.floor((o.offset + o.length) / cs) * cs;
          for (let pos = start; pos < end; pos += cs) {
            const backingByte = v.backing && pos < SIZE / 2 ? 0x5a : 0;
            model.fill(v.compat === '1.1' ? 0 : backingByte, pos, Math.min(pos + cs, SIZE));
          }
          break;
        }
        case 'flush':
          await backend.flush();
          break;
        case 'reopen':
          await backend.close();
          backend = await openImage(image, { format: 'qcow2', l2CacheSize: v.l2CacheSize });
          break;
      }
    }
    const all = await backend.read(0, SIZE);
    if (!all.equals(model)) {
      let i = 0;
      while (all[i] === model[i]) i++;
      assert.fail(
        `content differs from the model at offset ${i}: ${all[i]} != ${model[i]} after ${JSON.stringify(ops)}`,
      );
    }
  } finally {
    await backend.close();
  }
  const check = run('qemu-img', ['check', '-f', 'qcow2', image]);
  assert.equal(check.status, 0, `qemu-img check: ${check.stdout}${check.stderr} after ${JSON.stringify(ops)}`);
  const converted = join(dir, 'converted.raw');
  runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, converted]);
  const viaQemu = await import('node:fs/promises').then((fs) => fs.readFile(converted));
  assert.ok(viaQemu.equals(model), 'qemu-img reads what the model holds');
}
