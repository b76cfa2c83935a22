/**
 * vdisk amend against qemu-img amend on identical images: compat 0.10 <-> 1.1 (a downgrade
 * turns zero clusters into zero data, with and without a backing file), lazy refcounts, every
 * refcount width and size: the images read as before (qemu-img compare), check clean, and
 * qemu-img info shows what it shows for qemu-img's. Refusals are one line with qemu-img's exit
 * code, and change nothing.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  assertClean,
  assertSameContent,
  bothRun,
  infoFields,
  type Layer,
  QEMU_TOOLS,
  rangesOf,
  twinChains,
} from '../helpers/chain.js';
import { hasCommand, vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';
import { runOk } from '../helpers/tools.js';

const QEMU = QEMU_TOOLS.every(hasCommand);
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; amend interop tests do not run');

const DATA = ['write -P 0x41 0 300k', 'write -P 0x42 1M 64k', 'write -c -P 0x43 2M 128k', 'write -P 0x44 3333 1000'];

function image(options: string, withBacking: boolean): Layer[] {
  const v3 = !options.includes('compat=0.10');
  const io = [...DATA, ...(v3 ? ['write -z 64k 128k', 'write -z 3M 512k'] : [])];
  const top: Layer = { name: 'image.qcow2', format: 'qcow2', options, io, size: '4M' };
  if (!withBacking) return [top];
  return [{ name: 'base.raw', format: 'raw', size: '4M', io: ['write -P 0x99 0 4M'] }, top];
}

/** The image's content before the change, as raw. */
function contentBefore(dir: string): string {
  const copy = join(dir, 'before.raw');
  runOk('qemu-img', ['convert', '-O', 'raw', join(dir, 'image.qcow2'), copy]);
  return copy;
}

async function amendBoth(options: string, amend: string, withBacking = false): Promise<void> {
  await withTempDir(async (dir) => {
    const [ours, theirs] = await twinChains(dir, image(options, withBacking));
    const before = contentBefore(ours);
    await bothRun(ours, theirs, ['amend', '-o', amend, 'image.qcow2']);
    const mine = join(ours, 'image.qcow2');
    assertSameContent(mine, before, 'the image reads as before');
    assertSameContent(mine, join(theirs, 'image.qcow2'));
    assertClean(mine);
    assert.deepEqual(infoFields(mine), infoFields(join(theirs, 'image.qcow2')));
    assert.deepEqual(rangesOf(mine), rangesOf(join(theirs, 'image.qcow2')), 'the same ranges allocated');
  });
}

describe('amend against qemu-img', { skip: !QEMU && 'qemu-img not installed' }, () => {
  for (const withBacking of [false, true]) {
    it(`compat=0.10 downgrades, zero clusters becoming zero data (${withBacking ? 'over a backing file' : 'alone'})`, () =>
      amendBoth('', 'compat=0.10', withBacking));
  }
  it('compat=0.10 of an image with lazy refcounts', () => amendBoth('lazy_refcounts=on', 'compat=0.10'));
  it('compat=1.1 upgrades', () => amendBoth('compat=0.10', 'compat=1.1', true));
  it('compat=1.1 with lazy refcounts in one go', () => amendBoth('compat=0.10', 'compat=1.1,lazy_refcounts=on'));
  it('lazy_refcounts on and off', async () => {
    await amendBoth('', 'lazy_refcounts=on');
    await amendBoth('lazy_refcounts=on', 'lazy_refcounts=off', true);
  });
  for (const bits of [1, 2, 4, 8, 32, 64]) {
    it(`refcount_bits=${bits} writes the refcount structure anew`, () =>
      amendBoth(bits === 1 ? 'cluster_size=4k' : '', `refcount_bits=${bits}`, bits === 8));
  }
  it('refcount_bits back to 16 from 1, and the size', async () => {
    await amendBoth('refcount_bits=1', 'refcount_bits=16');
    await amendBoth('', 'size=6M');
  });

  it('refusals: one line, the exit code of qemu-img, nothing changed', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, image('', true));
      for (const d of [ours, theirs]) {
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', join(d, 'ext.qcow2'), '1M']);
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=8', join(d, 'r8.qcow2'), '1M']);
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', join(d, 'z.qcow2'), '1M']);
        runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -c -P 7 0 64k', join(d, 'z.qcow2')]);
      }
      const names = ['image.qcow2', 'base.raw', 'ext.qcow2', 'r8.qcow2', 'z.qcow2'];
      const before = await Promise.all(names.map((n) => fileState(join(ours, n))));
      const cases: [string[], RegExp][] = [
        [
          ['amend', '-f', 'raw', '-o', 'compat=0.10', 'base.raw'],
          /Format driver 'raw' does not support option amendment/,
        ],
        [['amend', 'image.qcow2'], /Must specify options \(-o\)/],
        [['amend', '-o', 'cluster_size=4k', 'image.qcow2'], /Invalid parameter 'cluster_size'/],
        [['amend', '-o', 'foo=bar', 'image.qcow2'], /Invalid parameter 'foo'/],
        [['amend', '-o', 'compat=0.9', 'image.qcow2'], /Unknown compatibility level 0.9/],
        [['amend', '-o', 'lazy_refcounts=maybe', 'image.qcow2'], /expects 'on' or 'off'/],
        [['amend', '-o', 'refcount_bits=3', 'image.qcow2'], /Refcount width must be a power of two/],
        [['amend', '-o', 'refcount_bits=8,compat=0.10', 'image.qcow2'], /Refcount widths other than 16 bits/],
        [['amend', '-o', 'lazy_refcounts=on,compat=0.10', 'image.qcow2'], /Lazy refcounts only supported/],
        [['amend', '-o', 'backing_file=other.raw', 'image.qcow2'], /Cannot amend the backing file/],
        [['amend', '-o', 'backing_fmt=qcow2', 'image.qcow2'], /Cannot amend the backing file/],
        [['amend', '-o', 'compat=0.10', 'ext.qcow2'], /Cannot downgrade an image with incompatible features 0x10 set/],
        [['amend', '-o', 'compat=0.10', 'r8.qcow2'], /compat=0.10 requires refcount_bits=16/],
        [['amend', '-o', 'compat=0.10', 'z.qcow2'], /zstd compression type and existing compressed clusters/],
        [['amend', '-o', 'compat=1.1', 'nothere.qcow2'], /nothere\.qcow2/],
      ];
      for (const [args, message] of cases) {
        const r = await bothRun(ours, theirs, args);
        assert.equal(r.code, 1, args.join(' '));
        assert.match(r.stderr, message);
      }
      assert.deepEqual(await Promise.all(names.map((n) => fileState(join(ours, n)))), before);
      // The backing fields as they are: nothing to change, as qemu-img accepts it.
      await bothRun(ours, theirs, ['amend', '-o', 'backing_file=base.raw,backing_fmt=raw', 'image.qcow2']);
    }));

  it('-o help lists the options amend takes', async () => {
    await withTempDir(async (dir) => {
      const [ours] = await twinChains(dir, image('', false));
      const { stdout } = await vdisk(['amend', '-o', 'help', 'image.qcow2'], { cwd: ours });
      for (const name of ['compat', 'lazy_refcounts', 'refcount_bits', 'size', 'backing_file']) {
        assert.match(stdout, new RegExp(`^  ${name}=<`, 'm'));
      }
    });
  });
});
