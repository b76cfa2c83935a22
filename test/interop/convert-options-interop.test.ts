/**
 * convert's chain options and create -u against qemu-img: -B/-F makes an overlay that reads as
 * the source and holds only what differs from its backing file (the ranges qemu-img's holds),
 * --target-is-zero with -n, -W and -m, several sources into one target (byte-identical raw),
 * create -u with a backing file that does not exist; refusals with qemu-img's exit codes.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  assertClean,
  assertSameContent,
  bothRun,
  infoFields,
  QEMU_TOOLS,
  rangesOf,
  twinChains,
} from '../helpers/chain.js';
import { hasCommand } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';
import { runOk } from '../helpers/tools.js';

const QEMU = QEMU_TOOLS.every(hasCommand);
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; convert option interop tests do not run');

const CHAIN = [
  { name: 'base.qcow2', format: 'qcow2' as const, io: ['write -P 0x11 0 2M', 'write -P 0x12 3M 64k'] },
  {
    name: 'top.qcow2',
    format: 'qcow2' as const,
    io: ['write -P 0x31 1536k 64k', 'write -z 0 64k', 'write -P 0x32 3300k 5000', 'write -P 0x11 2M 64k'],
  },
];

/** The ranges an image holds itself (depth 0), merged. */
function ownRanges(file: string): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  for (const r of rangesOf(file)) {
    if (r.depth !== 0 || !r.present) continue;
    const last = out[out.length - 1];
    if (last && last.end === r.start) last.end += r.length;
    else out.push({ start: r.start, end: r.start + r.length });
  }
  return out;
}

describe('convert options and create -u against qemu-img', { skip: !QEMU && 'qemu-img not installed' }, () => {
  for (const extra of [[], ['-c'], ['-W', '-m', '3'], ['-o', 'cluster_size=4k']]) {
    it(`convert -B -F ${extra.join(' ')}: an overlay holding what differs from its backing file`, () =>
      withTempDir(async (dir) => {
        const [ours, theirs] = await twinChains(dir, CHAIN);
        const args = ['convert', ...extra, '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', 'out.qcow2'];
        await bothRun(ours, theirs, args);
        const out = join(ours, 'out.qcow2');
        assertSameContent(out, join(ours, 'top.qcow2'), 'the overlay reads as the source');
        assertClean(out);
        assert.deepEqual(infoFields(out), infoFields(join(theirs, 'out.qcow2')));
        // The source holds 0x11 at 2M as its backing file does: neither tool copies it. qemu-img
        // also writes zero clusters where the source's clusters hold zeros over zeros; vdisk
        // leaves those out, so its overlay holds a part of qemu-img's.
        const mine = ownRanges(out);
        const reference = ownRanges(join(theirs, 'out.qcow2'));
        for (const r of mine) {
          assert.ok(
            reference.some((q) => q.start <= r.start && r.end <= q.end),
            `[${r.start}, ${r.end}) is in qemu-img's overlay too`,
          );
        }
        if (extra.length === 0) assert.deepEqual(mine, reference, 'the same ranges as qemu-img');
      }));
  }

  it('several sources become one target, byte for byte as qemu-img writes it; -n --target-is-zero', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, CHAIN);
      await bothRun(ours, theirs, ['convert', '-O', 'raw', 'top.qcow2', 'base.qcow2', 'top.qcow2', 'all.raw']);
      assert.ok((await readFile(join(ours, 'all.raw'))).equals(await readFile(join(theirs, 'all.raw'))));
      for (const d of [ours, theirs]) runOk('qemu-img', ['create', '-q', '-f', 'qcow2', join(d, 'zero.qcow2'), '8M']);
      await bothRun(ours, theirs, [
        'convert',
        '-n',
        '--target-is-zero',
        '-O',
        'qcow2',
        'top.qcow2',
        'base.qcow2',
        'zero.qcow2',
      ]);
      assertSameContent(join(ours, 'zero.qcow2'), join(theirs, 'zero.qcow2'));
      assertClean(join(ours, 'zero.qcow2'));
    }));

  it('create -u names a backing file that does not exist yet; the size is needed', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, CHAIN);
      const create = ['create', '-f', 'qcow2', '-u', '-b', 'later.qcow2', '-F', 'qcow2'];
      await bothRun(ours, theirs, [...create, 'new.qcow2', '1M']);
      assert.deepEqual(infoFields(join(ours, 'new.qcow2')), infoFields(join(theirs, 'new.qcow2')));
      const r = await bothRun(ours, theirs, [...create, 'n2.qcow2']);
      assert.match(r.stderr, /Image creation needs a size parameter/);
      assert.equal((await fileState(join(ours, 'n2.qcow2'))).exists, false);
    }));

  it('refusals: one line, qemu-img exit codes, nothing made', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twinChains(dir, CHAIN);
      const cases: [string[], RegExp][] = [
        [
          ['convert', '--target-is-zero', '-O', 'qcow2', 'top.qcow2', 'a.qcow2'],
          /--target-is-zero requires use of -n flag/,
        ],
        [['convert', '-O', 'qcow2', '-B', 'base.qcow2', 'top.qcow2', 'b.qcow2'], /requires explicit backing format/],
        [
          ['convert', '-O', 'raw', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', 'c.raw'],
          /Backing file not supported/,
        ],
        [['convert', '-m', '17', 'top.qcow2', 'd.raw'], /Invalid number of coroutines/],
      ];
      for (const [args, message] of cases) {
        const r = await bothRun(ours, theirs, args);
        assert.equal(r.code, 1, args.join(' '));
        assert.match(r.stderr, message);
      }
      for (const name of ['a.qcow2', 'b.qcow2', 'c.raw', 'd.raw']) {
        assert.equal((await fileState(join(ours, name))).exists, false, name);
      }
    }));
});
