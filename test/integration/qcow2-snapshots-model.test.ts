/**
 * Random sequences of snapshot creates, applies and deletes mixed with writes, write-zeroes and
 * discards keep the image and every snapshot equal to an in-memory model: after each step vdisk
 * check and qemu-img check find nothing, the snapshots are the model's (ids and names, in order),
 * and the image and every snapshot read back as the model says; at the end of each sequence
 * qemu-img convert reads the image and every snapshot (-l) as the model says.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { openImage } from '../../src/engine/open.js';
import { checkImage } from '../../src/tools/check.js';
import { convertImage } from '../../src/tools/convert.js';
import { createImage } from '../../src/tools/create.js';
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from '../../src/tools/snapshot.js';
import { hasTool, run } from '../helpers/tools.js';

const SIZE = 256 * 1024;

type Op =
  | { kind: 'write'; offset: number; length: number; byte: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'create'; name: string }
  | { kind: 'apply'; pick: number; byId: boolean }
  | { kind: 'delete'; pick: number };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 70_000 }))
  .map(([offset, length]) => ({ offset, length: Math.min(length, SIZE - offset) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(range, fc.integer({ min: 1, max: 255 }))
      .map(([r, byte]) => ({ kind: 'write' as const, ...r, byte })),
  },
  { weight: 1, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: 'zero' as const, ...r, unmap })) },
  { weight: 1, arbitrary: range.map((r) => ({ kind: 'discard' as const, ...r })) },
  // Few names, so that some repeat (qemu-img allows that; delete takes the first).
  { weight: 3, arbitrary: fc.constantFrom('a', 'b', 'c', 'd').map((name) => ({ kind: 'create' as const, name })) },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.nat(), fc.boolean()).map(([pick, byId]) => ({ kind: 'apply' as const, pick, byId })),
  },
  { weight: 2, arbitrary: fc.nat().map((pick) => ({ kind: 'delete' as const, pick })) },
);

interface ModelSnapshot {
  id: string;
  name: string;
  content: Buffer;
}

interface Variant {
  options: string;
  /** Start from an image whose clusters are all stored compressed (convert -c). */
  compressed?: boolean;
}

const VARIANTS: Variant[] = [
  { options: 'cluster_size=4096' },
  { options: 'cluster_size=512,refcount_bits=64' },
  { options: 'cluster_size=16384,compat=0.10' },
  { options: 'cluster_size=16384,extended_l2=on' },
  { options: 'cluster_size=4096,lazy_refcounts=on' },
  { options: 'cluster_size=4096', compressed: true },
];

const QEMU = hasTool('qemu-img');

describe('qcow2 snapshots against an in-memory model', () => {
  for (const v of VARIANTS) {
    it(v.options, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'vdisk-snapmodel-'));
      try {
        await fc.assert(
          fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 14 }), async (ops) => {
            await runSequence(dir, v, ops);
          }),
          { numRuns: 8 },
        );
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});

async function runSequence(dir: string, v: Variant, ops: Op[]): Promise<void> {
  const image = join(dir, 'image.qcow2');
  await rm(image, { force: true });
  const active = Buffer.alloc(SIZE);
  if (v.compressed) {
    for (let i = 0; i < SIZE; i++) active[i] = (i >> 9) % 7 === 0 ? 0 : ((i >> 9) * 13) & 0xff || 1;
    const raw = join(dir, 'start.raw');
    await writeFile(raw, active);
    await convertImage({
      source: raw,
      target: image,
      sourceFormat: 'raw',
      targetFormat: 'qcow2',
      compress: true,
      options: v.options,
    });
  } else {
    await createImage({ filename: image, format: 'qcow2', size: SIZE, options: v.options });
  }
  const snapshots: ModelSnapshot[] = [];
  for (const [step, o] of ops.entries()) {
    const what = `step ${step} ${JSON.stringify(o)}`;
    if (o.kind === 'write' || o.kind === 'zero' || o.kind === 'discard') {
      const disk = await openImage(image, { format: 'qcow2' });
      try {
        if (o.kind === 'write') {
          await disk.write(o.offset, Buffer.alloc(o.length, o.byte));
          active.fill(o.byte, o.offset, o.offset + o.length);
        } else if (o.kind === 'zero') {
          await disk.writeZeroes(o.offset, o.length, { mayUnmap: o.unmap });
          active.fill(0, o.offset, o.offset + o.length);
        } else {
          // A discard reads back as zeros where it freed whole clusters; elsewhere as before.
          await disk.discard(o.offset, o.length);
          active.set(await disk.read(o.offset, o.length), o.offset);
        }
      } finally {
        await disk.close();
      }
    } else if (o.kind === 'create') {
      await createSnapshot(image, o.name, { format: 'qcow2' });
      // As QEMU numbers them: one more than the largest id there is now.
      const id = String(Math.max(0, ...snapshots.map((s) => Number(s.id))) + 1);
      snapshots.push({ id, name: o.name, content: Buffer.from(active) });
    } else if (o.kind === 'apply' && snapshots.length > 0) {
      const target = snapshots[o.pick % snapshots.length]!;
      // By name, the first of that name is applied.
      const chosen = o.byId ? target : snapshots.find((s) => s.name === target.name)!;
      await applySnapshot(image, o.byId ? target.id : target.name, { format: 'qcow2' });
      chosen.content.copy(active);
    } else if (o.kind === 'delete' && snapshots.length > 0) {
      const name = snapshots[o.pick % snapshots.length]!.name;
      await deleteSnapshot(image, name, { format: 'qcow2' });
      snapshots.splice(
        snapshots.findIndex((s) => s.name === name),
        1,
      );
    } else {
      continue;
    }
    await assertMatchesModel(image, active, snapshots, what);
  }
  if (QEMU) await assertQemuAgrees(dir, image, active, snapshots);
}

async function assertMatchesModel(image: string, active: Buffer, snapshots: ModelSnapshot[], what: string) {
  if (QEMU) {
    const theirs = run('qemu-img', ['check', '-f', 'qcow2', image]);
    assert.equal(theirs.status, 0, `${what}: qemu-img check: ${theirs.stdout}${theirs.stderr}`);
  }
  const check = await checkImage(image, { format: 'qcow2' });
  assert.ok(check.report, `${what}: vdisk check failed: ${check.failure}`);
  assert.equal(check.report.corruptions, 0, `${what}: corruptions`);
  assert.equal(check.report.leaks, 0, `${what}: leaks`);
  assert.deepEqual(
    (await listSnapshots(image, { format: 'qcow2' })).map((s) => `${s.id}:${s.name}`),
    snapshots.map((s) => `${s.id}:${s.name}`),
    `${what}: the snapshot list`,
  );
  const disk = await openImage(image, { format: 'qcow2', readOnly: true });
  try {
    assert.ok((await disk.read(0, SIZE)).equals(active), `${what}: the image's content`);
  } finally {
    await disk.close();
  }
  for (const s of snapshots) {
    const at = await openImage(image, { format: 'qcow2', readOnly: true, snapshot: { id: s.id } });
    try {
      assert.ok((await at.read(0, SIZE)).equals(s.content), `${what}: the content of snapshot ${s.id}`);
    } finally {
      await at.close();
    }
  }
}

async function assertQemuAgrees(dir: string, image: string, active: Buffer, snapshots: ModelSnapshot[]) {
  const check = run('qemu-img', ['check', '-f', 'qcow2', image]);
  assert.equal(check.status, 0, `qemu-img check: ${check.stdout}${check.stderr}`);
  for (const s of snapshots) {
    const out = join(dir, 'snapshot.raw');
    const r = run('qemu-img', ['convert', '-f', 'qcow2', '-l', `snapshot.id=${s.id}`, '-O', 'raw', image, out]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok((await readFile(out)).equals(s.content), `qemu-img convert -l: snapshot ${s.id}`);
  }
  const out = join(dir, 'active.raw');
  assert.equal(run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, out]).status, 0);
  assert.ok((await readFile(out)).equals(active), "qemu-img: the image's content");
}
