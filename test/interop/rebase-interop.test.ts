/**
 * vdisk rebase against qemu-img rebase on identical chains: safe mode leaves the overlay
 * reading exactly as before (compared with a raw copy taken first) and as qemu-img leaves it,
 * with the same backing fields in qemu-img info and a clean check; -u only renames; -b ""
 * takes everything in; errors are one line, with qemu-img's exit code, and change nothing.
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
import { hasCommand } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';
import { runOk } from '../helpers/tools.js';

const QEMU = QEMU_TOOLS.every(hasCommand);
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; rebase interop tests do not run');

/** old.qcow2 <- top.qcow2, and new.* to rebase onto (sharing part of old's data). */
function chain(topOptions: string): Layer[] {
  return [
    { name: 'old.qcow2', format: 'qcow2', io: ['write -P 0x11 0 2M', 'write -P 0x12 3M 100k'] },
    {
      name: 'top.qcow2',
      format: 'qcow2',
      options: topOptions,
      io: ['write -P 0x31 1536k 64k', 'write -P 0x32 12345 6789'],
    },
  ];
}

async function withNewBacking(ours: string, theirs: string, format: 'raw' | 'qcow2', size: string): Promise<void> {
  for (const d of [ours, theirs]) {
    const file = join(d, `new.${format}`);
    runOk('qemu-img', ['create', '-q', '-f', format, file, size]);
    runOk('qemu-io', ['-f', format, '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x55 2M 64k', file]);
  }
}

/** The overlay's content before the rebase, as raw. */
function snapshotContent(dir: string): string {
  const copy = join(dir, 'before.raw');
  runOk('qemu-img', ['convert', '-O', 'raw', join(dir, 'top.qcow2'), copy]);
  return copy;
}

describe('rebase against qemu-img', { skip: !QEMU && 'qemu-img not installed' }, () => {
  const CASES = [
    { format: 'qcow2', options: '', size: '4M' },
    { format: 'raw', options: '', size: '4M' },
    { format: 'qcow2', options: 'compat=0.10', size: '4M' },
    { format: 'qcow2', options: 'cluster_size=4k', size: '3M' },
    { format: 'raw', options: 'extended_l2=on', size: '6M' },
  ] as const;
  for (const c of CASES) {
    it(`safe rebase onto a ${c.format} file of ${c.size} (overlay ${c.options || 'default'}) reads as before`, () =>
      withTempDir(async (dir) => {
        const [ours, theirs] = await twinChains(dir, chain(c.options));
        await withNewBacking(ours, theirs, c.format, c.size);
        const before = snapshotContent(ours);
        await bothRun(ours, theirs, ['rebase', '-b', `new.${c.format}`, '-F', c.format, 'top.qcow2']);
        const top = join(ours, 'top.qcow2');
        assertSameContent(top, before, 'the overlay reads as before');
        assertSameContent(top, join(theirs, 'top.qcow2'), 'as qemu-img leaves it');
        assertClean(top);
        assert.deepEqual(infoFields(top), infoFields(join(theirs, 'top.qcow2')));
        assert.deepEqual(rangesOf(top), rangesOf(join(theirs, 'top.qcow2')), 'the same ranges copied in');
      }));
  }

  it('-b "" takes everything in from the old chain and removes the backing file', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, chain(''));
      const before = snapshotContent(ours);
      await bothRun(ours, theirs, ['rebase', '-b', '', 'top.qcow2']);
      const top = join(ours, 'top.qcow2');
      assertSameContent(top, before);
      assertClean(top);
      assert.deepEqual(infoFields(top), infoFields(join(theirs, 'top.qcow2')));
      assert.equal(infoFields(top)['backing-filename'], undefined);
    }));

  it('-u only rewrites the backing fields (the old file may be gone)', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, chain(''));
      await withNewBacking(ours, theirs, 'raw', '4M');
      for (const d of [ours, theirs]) runOk('mv', [join(d, 'old.qcow2'), join(d, 'renamed.qcow2')]);
      await bothRun(ours, theirs, ['rebase', '-u', '-b', 'renamed.qcow2', '-F', 'qcow2', 'top.qcow2']);
      const top = join(ours, 'top.qcow2');
      assert.deepEqual(infoFields(top), infoFields(join(theirs, 'top.qcow2')));
      assertSameContent(top, join(theirs, 'top.qcow2'));
      assertClean(top);
      // A long name, then a short one: each header write leaves a header qemu-img reads.
      const long = `${'d'.repeat(200)}.raw`;
      for (const d of [ours, theirs]) runOk('ln', ['-s', 'new.raw', join(d, long)]);
      await bothRun(ours, theirs, ['rebase', '-u', '-b', long, '-F', 'raw', 'top.qcow2']);
      await bothRun(ours, theirs, ['rebase', '-u', '-b', 'new.raw', '-F', 'raw', 'top.qcow2']);
      assert.deepEqual(infoFields(top), infoFields(join(theirs, 'top.qcow2')));
      assertClean(top);
    }));

  it('errors: one line, the exit code of qemu-img, nothing changed', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, chain(''));
      await withNewBacking(ours, theirs, 'raw', '4M');
      for (const d of [ours, theirs]) runOk('qemu-img', ['create', '-q', '-f', 'raw', join(d, 'plain.raw'), '1M']);
      const names = ['old.qcow2', 'top.qcow2', 'new.raw', 'plain.raw'];
      const before = await Promise.all(names.map((n) => fileState(join(ours, n))));
      const cases: [string[], RegExp][] = [
        [['rebase', 'top.qcow2'], /Must specify backing file \(-b\) or use unsafe mode \(-u\)/],
        [['rebase', '-b', 'new.raw', 'top.qcow2'], /backing format must be specified/],
        [['rebase', '-u', '-b', 'new.raw', 'top.qcow2'], /backing format must be specified/],
        [['rebase', '-b', 'nothere.raw', '-F', 'raw', 'top.qcow2'], /Could not open new backing file 'nothere.raw'/],
        [['rebase', '-b', 'new.raw', '-F', 'qcow2', 'top.qcow2'], /Could not open new backing file 'new.raw'/],
        [['rebase', '-f', 'raw', '-b', 'new.raw', '-F', 'raw', 'plain.raw'], /Operation not supported/],
        [['rebase', '-b', 'new.raw', '-F', 'raw', 'top.qcow2', 'extra'], /Expecting one image file name/],
      ];
      for (const [args, message] of cases) {
        const r = await bothRun(ours, theirs, args);
        assert.equal(r.code, 1, args.join(' '));
        assert.match(r.stderr, message);
      }
      assert.deepEqual(await Promise.all(names.map((n) => fileState(join(ours, n)))), before);
    }));
});
