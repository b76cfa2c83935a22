/**
 * vdisk commit against qemu-img commit on identical chains: the same message and exit code, the
 * base and the overlay reading the same afterwards (qemu-img compare), both clean (qemu-img
 * check), the emptied overlay mapping alike, the committed patterns read back by qemu-io; -d
 * and -b leave the overlay as it was; errors are one line and change nothing.
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
  mapOf,
  QEMU_TOOLS,
  qemuIo,
  twinChains,
} from '../helpers/chain.js';
import { hasCommand } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';

const QEMU = QEMU_TOOLS.every(hasCommand);
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; commit interop tests do not run');

/** The ranges an image decides itself (depth 0 in qemu-img map). */
function ownRanges(file: string, dir: string): unknown[] {
  const map = JSON.parse(mapOf(file, dir)) as { depth: number; present: boolean }[];
  return map.filter((e) => e.depth === 0 && e.present);
}

/** base <- mid <- top, each layer with patterns of its own and some zeroed ranges. */
function chain(baseFormat: 'raw' | 'qcow2', overlayOptions: string, topSize?: string): Layer[] {
  const v3 = !overlayOptions.includes('compat=0.10');
  return [
    { name: 'base.img', format: baseFormat, size: '4M', io: ['write -P 0x11 0 2M', 'write -P 0x12 3M 512k'] },
    {
      name: 'mid.qcow2',
      format: 'qcow2',
      options: overlayOptions,
      io: ['write -P 0x21 512k 1M', ...(v3 ? ['write -z 3M 64k'] : []), 'write -P 0x22 3500k 4k'],
    },
    {
      name: 'top.qcow2',
      format: 'qcow2',
      options: overlayOptions,
      size: topSize,
      io: ['write -P 0x31 1M 64k', 'write -P 0x32 100k 3000', ...(v3 ? ['write -z 0 64k'] : [])],
    },
  ];
}

describe('commit against qemu-img', { skip: !QEMU && 'qemu-img not installed' }, () => {
  const CASES = [
    { base: 'qcow2', options: '' },
    { base: 'raw', options: '' },
    { base: 'qcow2', options: 'compat=0.10' },
    { base: 'qcow2', options: 'cluster_size=4k,refcount_bits=8' },
    { base: 'qcow2', options: 'extended_l2=on,cluster_size=32k' },
    { base: 'qcow2', options: 'lazy_refcounts=on' },
  ] as const;
  for (const c of CASES) {
    it(`commit into the backing file (${c.base} base, overlays ${c.options || 'default'})`, () =>
      withTempDir(async (dir) => {
        const [ours, theirs] = await twinChains(dir, chain(c.base, c.options));
        await bothRun(ours, theirs, ['commit', 'top.qcow2']);
        for (const name of ['base.img', 'mid.qcow2', 'top.qcow2']) {
          assertSameContent(join(ours, name), join(theirs, name), `${name} reads as qemu-img left it`);
          if (name !== 'base.img' || c.base === 'qcow2') assertClean(join(ours, name));
        }
        assert.deepEqual(ownRanges(join(ours, 'top.qcow2'), ours), [], 'the overlay is emptied');
        assert.deepEqual(ownRanges(join(theirs, 'top.qcow2'), theirs), [], 'as qemu-img empties it');
        // The committed data is in mid now, whatever top says.
        qemuIo(
          join(ours, 'mid.qcow2'),
          'qcow2',
          'read -P 0x31 1M 64k',
          'read -P 0x32 100k 3000',
          'read -P 0x21 1088k 448k',
        );
      }));
  }

  it('commit -b into the bottom of the chain leaves the overlay (and -b implies -d)', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, chain('qcow2', ''));
      const top = await fileState(join(ours, 'top.qcow2'));
      await bothRun(ours, theirs, ['commit', '-b', 'base.img', 'top.qcow2']);
      assert.deepEqual(await fileState(join(ours, 'top.qcow2')), top, 'the overlay is untouched');
      assertSameContent(join(ours, 'base.img'), join(theirs, 'base.img'));
      assertClean(join(ours, 'base.img'));
      qemuIo(join(ours, 'base.img'), 'qcow2', 'read -P 0x31 1M 64k', 'read -P 0x21 512k 512k', 'read -P 0x22 3500k 4k');
    }));

  it('commit -d keeps the overlay; -q prints nothing; -p ends with the message', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, chain('qcow2', ''));
      const top = await fileState(join(ours, 'top.qcow2'));
      await bothRun(ours, theirs, ['commit', '-d', '-q', 'top.qcow2']);
      assert.deepEqual(await fileState(join(ours, 'top.qcow2')), top);
      assertSameContent(join(ours, 'mid.qcow2'), join(theirs, 'mid.qcow2'));
    }));

  it('a backing file smaller than the overlay grows to its size', () =>
    withTempDir(async (dir) => {
      const layers = chain('qcow2', '', '6M');
      layers[2]!.io!.push('write -P 0x33 5M 64k');
      const [ours, theirs] = await twinChains(dir, layers);
      await bothRun(ours, theirs, ['commit', 'top.qcow2']);
      assert.deepEqual(infoFields(join(ours, 'mid.qcow2')), infoFields(join(theirs, 'mid.qcow2')));
      assertSameContent(join(ours, 'mid.qcow2'), join(theirs, 'mid.qcow2'));
      qemuIo(join(ours, 'mid.qcow2'), 'qcow2', 'read -P 0x33 5M 64k');
    }));

  it('errors: one line, the exit code of qemu-img, nothing changed', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, chain('raw', ''));
      const names = ['base.img', 'mid.qcow2', 'top.qcow2'];
      const before = await Promise.all(names.map((n) => fileState(join(ours, n))));
      const cases: [string[], RegExp][] = [
        [['commit', '-f', 'raw', 'base.img'], /^vdisk: Image does not have a backing file$/m],
        [['commit', '-b', 'nothere.img', 'top.qcow2'], /Did not find 'nothere.img' in the backing chain/],
        [['commit', 'missing.qcow2'], /missing\.qcow2/],
        [['commit'], /Expecting one image file name/],
      ];
      for (const [args, message] of cases) {
        const r = await bothRun(ours, theirs, args);
        assert.equal(r.code, 1);
        assert.match(r.stderr, message);
      }
      assert.deepEqual(await Promise.all(names.map((n) => fileState(join(ours, n)))), before);
    }));
});
