/**
 * Power loss during snapshot operations: create, delete and apply of internal snapshots run on a
 * recorded image, and every crash state of the log (in each window between flushes: the volatile
 * writes in every subset, or a sample when there are many, and torn writes) is checked:
 *
 * 1. the image opens read-write (a state left with the dirty bit set is repaired on open);
 * 2. vdisk's check finds no corruption (leaked clusters are allowed, as QEMU allows them), and on a
 *    sample qemu-img check agrees;
 * 3. the image holds the state before the operation or the state after it, whole: the same
 *    snapshots, the same active content, the same content in every snapshot.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cacheMode } from '../../src/block/cache-mode.js';
import { checkQcow2 } from '../../src/format/qcow2/check/check.js';
import type { Qcow2Image } from '../../src/format/qcow2/image/image.js';
import { qcow2Format } from '../../src/format/qcow2/index.js';
import { createImage } from '../../src/tools/create.js';
import { hasCommand, run } from '../helpers/run.js';
import { config, LONG, rng } from './lib/config.js';
import { StateBuilder, statesOf, windowsOf } from './lib/crash-states.js';
import { FlatDriver } from './lib/flat-driver.js';
import { RecordingDriver } from './lib/recording-driver.js';
import { type ImageState, imageState } from './lib/snapshot-states.js';

const KiB = 1024;

interface SnapshotCase {
  name: string;
  size: number;
  options: Record<string, string | number | boolean>;
  /** Unrecorded: data and snapshots the operation starts from. */
  setup: (image: Qcow2Image) => Promise<void>;
  /** The recorded operation. */
  op: (image: Qcow2Image) => Promise<void>;
  /**
   * v2 has no dirty bit: a crash between a refcount change and the COPIED flags that follow it
   * leaves flags that check reports (and `check -r all` repairs), as QEMU leaves them. The flags
   * only ever lag in the safe direction (a needless copy-on-write, never a shared cluster
   * written in place), and the content is still the old or the new.
   */
  copiedFlagsMayLag?: boolean;
}

const WHEN = { dateSec: 1_700_000_000, dateNsec: 0 };

async function fill(image: Qcow2Image, offset: number, length: number, byte: number): Promise<void> {
  await image.write(offset, Buffer.alloc(length, byte));
}

const CASES: SnapshotCase[] = [
  {
    name: 'create (64 KiB clusters)',
    size: 1024 * KiB,
    options: {},
    setup: async (image) => {
      await fill(image, 0, 128 * KiB, 1);
      await fill(image, 512 * KiB, 4 * KiB, 2);
    },
    op: async (image) => {
      await image.snapshots.create({ name: 'new', ...WHEN });
    },
  },
  {
    name: 'create beside another snapshot (512-byte clusters: many L2 tables and refcount blocks)',
    size: 96 * KiB,
    options: { cluster_size: 512 },
    setup: async (image) => {
      await fill(image, 0, 40 * KiB, 1);
      await image.snapshots.create({ name: 'old', ...WHEN });
      await fill(image, 4 * KiB, 40 * KiB, 2);
    },
    op: async (image) => {
      await image.snapshots.create({ name: 'new', ...WHEN });
    },
  },
  {
    name: 'delete (shared and own clusters)',
    size: 1024 * KiB,
    options: {},
    setup: async (image) => {
      await fill(image, 0, 256 * KiB, 1);
      await image.snapshots.create({ name: 'a', ...WHEN });
      await fill(image, 64 * KiB, 64 * KiB, 2);
      await image.snapshots.create({ name: 'b', ...WHEN });
      await fill(image, 192 * KiB, 8 * KiB, 3);
    },
    op: async (image) => {
      await image.snapshots.delete('a');
    },
  },
  {
    name: 'delete the last snapshot (512-byte clusters)',
    size: 96 * KiB,
    options: { cluster_size: 512 },
    setup: async (image) => {
      await fill(image, 0, 40 * KiB, 1);
      await image.snapshots.create({ name: 'only', ...WHEN });
      await fill(image, 8 * KiB, 8 * KiB, 2);
    },
    op: async (image) => {
      await image.snapshots.delete('only');
    },
  },
  ...(['create', 'delete'] as const).map(
    (operation): SnapshotCase => ({
      name: `${operation}, v2 (compat=0.10)`,
      size: 256 * KiB,
      options: { compat: '0.10', cluster_size: 4096 },
      copiedFlagsMayLag: true,
      setup: async (image) => {
        await fill(image, 0, 64 * KiB, 1);
        await image.snapshots.create({ name: 'a', ...WHEN });
        await fill(image, 16 * KiB, 16 * KiB, 2);
      },
      op: async (image) => {
        if (operation === 'create') await image.snapshots.create({ name: 'b', ...WHEN });
        else await image.snapshots.delete('a');
      },
    }),
  ),
  {
    name: 'apply to a larger image (512-byte clusters: the size and the L1 table change together)',
    size: 64 * KiB,
    options: { cluster_size: 512 },
    setup: async (image) => {
      await fill(image, 0, 24 * KiB, 1);
      await image.snapshots.create({ name: 'small', ...WHEN });
      await image.truncate(96 * KiB, 'off');
      await fill(image, 8 * KiB, 80 * KiB, 2);
    },
    op: async (image) => {
      await image.snapshots.apply('small');
    },
  },
  {
    name: 'apply (lazy refcounts)',
    size: 1024 * KiB,
    options: { lazy_refcounts: true },
    setup: async (image) => {
      await fill(image, 0, 128 * KiB, 1);
      await image.snapshots.create({ name: 'back', ...WHEN });
      await fill(image, 64 * KiB, 128 * KiB, 2);
    },
    op: async (image) => {
      await image.snapshots.apply('back');
    },
  },
];

async function open(file: FlatDriver | RecordingDriver): Promise<Qcow2Image> {
  return (await qcow2Format.open(file, {
    filename: 'image.qcow2',
    cache: cacheMode('writeback'),
    readOnly: false,
  })) as Qcow2Image;
}

async function template(c: SnapshotCase): Promise<Buffer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-snapcrash-'));
  try {
    const file = path.join(dir, 'image.qcow2');
    await createImage({ filename: file, format: 'qcow2', size: c.size, options: c.options });
    const flat = new FlatDriver(await readFile(file), { name: 'image.qcow2' });
    const image = await open(flat);
    await c.setup(image);
    await image.close();
    return Buffer.from(flat.bytes());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const same = (a: ImageState, b: ImageState) => JSON.stringify(a) === JSON.stringify(b);

async function qemuCheck(dir: string, bytes: Buffer): Promise<string | undefined> {
  const file = path.join(dir, 'state.qcow2');
  await writeFile(file, bytes);
  const r = await run('qemu-img', ['check', '-f', 'qcow2', '--output=json', file]);
  const report = JSON.parse(r.stdout || '{}') as { corruptions?: number; 'check-errors'?: number };
  if ((report.corruptions ?? 0) > 0 || (report['check-errors'] ?? 0) > 0 || (r.code !== 0 && r.code !== 3)) {
    return `qemu-img check exited ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`;
  }
  return undefined;
}

describe('power loss during snapshot operations', () => {
  for (const [n, c] of CASES.entries()) {
    it(c.name, async (t) => {
      const base = await template(c);
      const before = await imageState(base);
      const rec = new RecordingDriver(base, { name: 'image.qcow2' });
      const image = await open(rec);
      rec.startRecording();
      await c.op(image);
      await image.close();
      const after = await imageState(Buffer.from(rec.flat.bytes()));
      assert.notDeepEqual(after, before, 'the operation changed the image');

      const random = rng(config.seed + n);
      const builder = new StateBuilder(rec.base, rec.log);
      const failures: string[] = [];
      const seen = new Set<string>();
      let states = 0;
      let qemuBudget = hasCommand('qemu-img') ? (LONG ? 40 : 6) : 0;
      const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-snapcrash-'));
      try {
        for (const win of windowsOf(rec.log, rec.now)) {
          builder.enter(win);
          const { main, torn } = statesOf(rec.log, win, {
            randomSubsets: config.crashRandomSubsets,
            tornPerWrite: config.crashTornPerWrite,
            processCrashOnly: false,
            random,
          });
          const cap = LONG ? Number.POSITIVE_INFINITY : 48;
          for (const state of [...main.slice(0, cap), ...torn.slice(0, cap / 4)]) {
            const file = builder.build(state);
            const key = file.bytes().toString('base64');
            if (seen.has(key) || failures.length >= 5) continue;
            seen.add(key);
            states++;
            const problem = await examine(file, before, after, c.copiedFlagsMayLag);
            const bytes = Buffer.from(file.bytes());
            const qemu = !problem && !c.copiedFlagsMayLag && qemuBudget-- > 0 ? await qemuCheck(dir, bytes) : undefined;
            if (problem ?? qemu) failures.push(`window ${win.index}, ${state.how}: ${problem ?? qemu}`);
          }
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      t.diagnostic(`${rec.log.length} host operations, ${states} distinct crash states checked`);
      assert.ok(states > 0);
      assert.deepEqual(failures, [], failures.join('\n'));
    });
  }
});

/** Opens (repairing a dirty image), checks, and compares with the states before and after. */
async function examine(
  file: FlatDriver,
  before: ImageState,
  after: ImageState,
  copiedFlagsMayLag = false,
): Promise<string | undefined> {
  try {
    const image = await open(file);
    await image.close();
  } catch (err) {
    return `the image does not open: ${(err as Error).message}`;
  }
  const bytes = Buffer.from(file.bytes());
  const result = await checkQcow2(new FlatDriver(bytes, { readOnly: true }));
  const lagging = copiedFlagsMayLag && result.messages.every((m) => m.startsWith('ERROR OFLAG_COPIED'));
  if (result.failure !== undefined || (result.corruptions > 0 && !lagging) || result.checkErrors > 0) {
    return `vdisk check: ${result.failure ?? ''} ${result.corruptions} corruptions: ${result.messages.slice(0, 3).join(' | ')}`;
  }
  const state = await imageState(bytes);
  if (!same(state, before) && !same(state, after)) {
    return `neither before nor after: ${JSON.stringify(state)} (before ${JSON.stringify(before)}, after ${JSON.stringify(after)})`;
  }
  return undefined;
}
