/**
 * Power loss during commit, rebase and amend (lib/chain-crash.ts): at every crash point the
 * image opens, checks without corruption, and reads as it may. The overlay of a commit reads
 * as before throughout (its base takes the data, durably, before the overlay lets go of it) and
 * the base holds, sector by sector, its old data or the committed data; a safe rebase and every
 * amend leave the image reading exactly as before, header switch included.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { BlockBackend } from '../../src/block/backend.js';
import type { BlockDriver } from '../../src/block/driver.js';
import { formatDefinition } from '../../src/engine/formats.js';
import type { CreateOptionValue } from '../../src/format/create-options.js';
import { RawDriver } from '../../src/format/raw/driver.js';
import { commitInto } from '../../src/tools/chain/commit.js';
import { copyDifferences } from '../../src/tools/chain/rebase.js';
import { createImage } from '../../src/tools/create.js';
import { type ChainCrashCase, openQcow2Over, runChainCrash } from './lib/chain-crash.js';
import { config } from './lib/config.js';
import { FlatDriver } from './lib/flat-driver.js';

const KiB = 1024;
const SIZE = 1024 * KiB;
const SECTOR = 512;

/** Bytes that differ from sector to sector and from seed to seed. */
function pattern(seed: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) buf.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return buf;
}

const raw = (bytes: Buffer, readOnly = true) => new RawDriver(new FlatDriver(bytes, { readOnly }));

type Files = Record<string, Buffer>;

/** A qcow2 image made by vdisk's create, then filled by `fill`; its backing files (raw) from `files`. */
async function qcow2(
  options: Record<string, CreateOptionValue>,
  files: Files,
  fill: (image: BlockDriver) => Promise<void>,
): Promise<Buffer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-chain-crash-'));
  try {
    for (const [name, bytes] of Object.entries(files)) await writeFile(path.join(dir, name), bytes);
    const file = path.join(dir, 'image.qcow2');
    await createImage({ filename: file, format: 'qcow2', size: SIZE, options });
    const flat = new FlatDriver(await readFile(file));
    const image = await openQcow2Over(flat, (name) => (files[name] ? raw(files[name]!) : undefined));
    await fill(image);
    await image.close();
    return Buffer.from(flat.bytes());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function contentOf(image: BlockDriver): Promise<Buffer> {
  const buf = Buffer.alloc(image.length());
  await image.read(0, buf);
  return buf;
}

const same = (expected: Buffer) => (content: Buffer) =>
  content.equals(expected) ? [] : [`reads differently from byte ${firstDifference(content, expected)}`];

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** Writes of the overlays: data, a partial cluster, zeros. */
async function overlayWrites(image: BlockDriver): Promise<void> {
  await image.write(64 * KiB, pattern(1, 128 * KiB));
  await image.write(300 * KiB, pattern(2, 10 * KiB));
  await image.writeZeroes(512 * KiB, 64 * KiB, { mayUnmap: true });
  await image.write(900 * KiB, pattern(3, 4 * KiB));
}

async function check(c: ChainCrashCase): Promise<void> {
  const report = await runChainCrash(c, config.seed, config.crashStatesPerRun * 2);
  console.log(`[reliability] ${c.name}: ${report.states} crash states`);
  assert.ok(report.states > 0, 'some crash states');
  assert.deepEqual(report.failures, [], report.failures.join('\n'));
}

describe('power loss during commit, rebase and amend', () => {
  const OVERLAYS: Record<string, CreateOptionValue>[] = [
    {},
    { lazy_refcounts: true },
    { compat: '0.10' },
    { cluster_size: 4096 },
  ];
  for (const options of OVERLAYS) {
    it(`commit: the overlay reads as before while it is emptied (${JSON.stringify(options)})`, async () => {
      const files = { 'base.raw': pattern(0xba5e, SIZE) };
      const image = await qcow2({ ...options, backing_file: 'base.raw', backing_fmt: 'raw' }, files, overlayWrites);
      const expected = await contentOf(await openQcow2Over(new FlatDriver(image), () => raw(files['base.raw'])));
      const base = new RawDriver(new FlatDriver(files['base.raw']));
      await check({
        name: 'commit-overlay',
        image,
        run: async (file) => {
          const top = new BlockBackend(await openQcow2Over(file, () => base), { writeCache: true });
          await commitInto(top, new BlockBackend(base, { writeCache: true }), 1, { keepTop: false });
          await top.close();
        },
        open: (file) => openQcow2Over(file, () => raw(expected)),
        judge: same(expected),
      });
    });
  }

  it('commit: the base holds its old data or the committed data, sector by sector', async () => {
    const baseImage = await qcow2({}, {}, async (image) => {
      await image.write(0, pattern(7, SIZE / 2));
      await image.writeZeroes(0, 64 * KiB, { mayUnmap: true });
    });
    const old = await contentOf(await openQcow2Over(new FlatDriver(baseImage), () => undefined));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-chain-crash-'));
    let topBytes: Buffer;
    try {
      await writeFile(path.join(dir, 'base.qcow2'), baseImage);
      const file = path.join(dir, 'top.qcow2');
      await createImage({
        filename: file,
        format: 'qcow2',
        size: SIZE,
        options: { backing_file: 'base.qcow2', backing_fmt: 'qcow2' },
      });
      topBytes = await readFile(file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const topFlat = new FlatDriver(topBytes);
    const filled = await openQcow2Over(topFlat, () => raw(old));
    await overlayWrites(filled);
    await filled.close();
    const committed = await contentOf(await openQcow2Over(new FlatDriver(topFlat.bytes()), () => raw(old)));
    await check({
      name: 'commit-base',
      image: baseImage,
      run: async (file) => {
        const base = await openQcow2Over(file, () => undefined);
        const top = new BlockBackend(await openQcow2Over(new FlatDriver(topFlat.bytes()), () => base), {
          writeCache: true,
        });
        await commitInto(top, new BlockBackend(base, { writeCache: true }), 1, { keepTop: true });
        await top.close();
      },
      open: (file) => openQcow2Over(file, () => undefined),
      judge: (content) => {
        for (let s = 0; s < SIZE; s += SECTOR) {
          const sector = content.subarray(s, s + SECTOR);
          if (!sector.equals(old.subarray(s, s + SECTOR)) && !sector.equals(committed.subarray(s, s + SECTOR))) {
            return [`sector at ${s} is neither the old nor the committed data`];
          }
        }
        return [];
      },
    });
  });

  const LONG = `${'sub/'.repeat(148)}new.raw`;
  for (const target of ['new.raw', LONG, '']) {
    const label =
      target === ''
        ? 'removing the backing file'
        : target === LONG
          ? 'a 599-byte name, past the first sector'
          : 'new.raw';
    it(`safe rebase (${label}): the overlay reads as before at every crash point`, async () => {
      const renamed = pattern(0x01d, SIZE);
      pattern(0x5eed, SIZE / 2).copy(renamed, SIZE / 4);
      const files: Files = { 'old.raw': pattern(0x01d, SIZE), 'new.raw': renamed, [LONG]: renamed };
      const image = await qcow2(
        { backing_file: 'old.raw', backing_fmt: 'raw' },
        { 'old.raw': files['old.raw']! },
        overlayWrites,
      );
      const expected = await contentOf(await openQcow2Over(new FlatDriver(image), (n) => raw(files[n]!)));
      await check({
        name: 'rebase',
        image,
        run: async (file) => {
          const top = new BlockBackend(await openQcow2Over(file, (n) => raw(files[n]!)), { writeCache: true });
          const next =
            target === '' ? undefined : new BlockBackend(raw(files[target]!), { writeCache: true, readOnly: true });
          await copyDifferences(top, next, undefined);
          await top.close();
          await formatDefinition('qcow2').setBacking!(
            file,
            target === '' ? undefined : { name: target, format: 'raw' },
          );
        },
        open: (file) => openQcow2Over(file, (n) => (files[n] ? raw(files[n]!) : undefined)),
        judge: same(expected),
      });
    });
  }

  const AMENDS: {
    options: Record<string, CreateOptionValue>;
    amend: Record<string, CreateOptionValue>;
    backing?: boolean;
  }[] = [
    { options: {}, amend: { compat: '0.10' }, backing: true },
    { options: { lazy_refcounts: true }, amend: { compat: '0.10' } },
    { options: { compat: '0.10' }, amend: { compat: '1.1', lazy_refcounts: true }, backing: true },
    { options: { lazy_refcounts: true }, amend: { lazy_refcounts: false } },
    { options: { cluster_size: 4096 }, amend: { refcount_bits: 1 } },
    { options: {}, amend: { refcount_bits: 64 }, backing: true },
  ];
  for (const a of AMENDS) {
    it(`amend ${JSON.stringify(a.amend)} of ${JSON.stringify(a.options)}${a.backing ? ' over a backing file' : ''}: reads as before`, async () => {
      const files: Files = a.backing ? { 'base.raw': pattern(0xba5e, SIZE) } : {};
      const backing: Record<string, CreateOptionValue> = a.backing
        ? { backing_file: 'base.raw', backing_fmt: 'raw' }
        : {};
      const image = await qcow2({ ...a.options, ...backing }, files, async (img) => {
        await overlayWrites(img);
        if (a.options.compat !== '0.10') await img.writeZeroes(128 * KiB, 64 * KiB, { mayUnmap: false });
      });
      const expected = await contentOf(await openQcow2Over(new FlatDriver(image), (n) => raw(files[n]!)));
      await check({
        name: 'amend',
        image,
        run: (file) =>
          formatDefinition('qcow2').amend!.amend(file, { filename: 'image.qcow2', options: a.amend, force: false }),
        open: (file) => openQcow2Over(file, (n) => (files[n] ? raw(files[n]!) : undefined)),
        judge: same(expected),
      });
    });
  }
});
