/**
 * vdisk measure against qemu-img measure: the same figures, text and JSON, over a grid of sizes
 * and qcow2 options (cluster size, refcount width, preallocation, extended L2, compat), for
 * --size and for images holding data, zeros, holes, a backing file; the same refusals.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildChain, QEMU_TOOLS } from '../helpers/chain.js';
import { hasCommand, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { run } from '../helpers/tools.js';

const QEMU = QEMU_TOOLS.every(hasCommand);
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; measure interop tests do not run');

async function same(args: string[], cwd?: string): Promise<void> {
  const mine = await vdisk(['measure', ...args], { cwd });
  const theirs = run('sh', ['-c', 'cd "$1" && shift && exec qemu-img measure "$@"', 'sh', cwd ?? '.', ...args]);
  assert.equal(mine.code, theirs.status, `${args.join(' ')}: ${mine.stderr} / ${theirs.stderr}`);
  assert.equal(mine.stdout, theirs.stdout, args.join(' '));
  if (theirs.status !== 0) {
    // qemu-img's message, in one line where qemu-img takes two.
    const first = theirs.stderr.split('\n')[0]!.replace(/^qemu-img: /, '');
    assert.match(mine.stderr, /^vdisk: [^\n]+\n$/, args.join(' '));
    assert.ok(mine.stderr.startsWith(`vdisk: ${first}`), `${args.join(' ')}: ${mine.stderr}`);
  }
}

const SIZES = ['0', '1', '512', '65535', '64M', '1G', '100G', '3T'];
const OPTIONS = [
  '',
  'cluster_size=512',
  'cluster_size=4k,refcount_bits=1',
  'cluster_size=2M,refcount_bits=64',
  'refcount_bits=8',
  'preallocation=metadata',
  'preallocation=falloc',
  'preallocation=full,cluster_size=16k',
  'extended_l2=on',
  'extended_l2=on,cluster_size=16k,refcount_bits=2',
  'compat=0.10',
  'lazy_refcounts=on,compression_type=zstd',
];

describe('measure against qemu-img', { skip: !QEMU && 'qemu-img not installed' }, () => {
  it('--size: a grid of sizes and qcow2 options, text and JSON', async () => {
    for (const options of OPTIONS) {
      for (const size of SIZES) {
        const o = options ? ['-o', options] : [];
        await same(['--size', size, '-O', 'qcow2', ...o]);
        if (size === '64M') await same(['--output=json', '--size', size, '-O', 'qcow2', ...o]);
      }
    }
    for (const size of ['0', '1', '1000', '1G']) await same(['--size', size, '-O', 'raw']);
    await same(['--output=json', '--size', '1G']);
  });

  it('images: data, zeros, holes, compressed clusters, a backing file, raw sources', () =>
    withTempDir(async (dir) => {
      buildChain(dir, [
        {
          name: 'base.raw',
          format: 'raw',
          size: '8M',
          io: ['write -P 1 0 1M', 'write -P 2 3000 100', 'write -P 3 5M 4k'],
        },
        {
          name: 'top.qcow2',
          format: 'qcow2',
          size: '9M',
          io: ['write -P 4 2M 64k', 'write -z 0 64k', 'write -c -P 5 6M 128k', 'write -P 6 8M 1000'],
        },
      ]);
      buildChain(dir, [{ name: 'empty.qcow2', format: 'qcow2', size: '100M' }]);
      for (const source of ['base.raw', 'top.qcow2', 'empty.qcow2']) {
        for (const options of ['', 'cluster_size=4k', 'cluster_size=1M,preallocation=metadata', 'compat=0.10']) {
          const o = options ? ['-o', options] : [];
          await same(['-O', 'qcow2', ...o, source], dir);
          await same(['--output=json', '-O', 'qcow2', ...o, source], dir);
        }
        await same(['-O', 'raw', source], dir);
        await same(['-O', 'qcow2', '-o', 'backing_file=base.raw', source], dir);
      }
      await same(['-f', 'raw', '-O', 'qcow2', join(dir, 'top.qcow2')]);
    }));

  it('refusals', async () => {
    const cases = [
      ['--size', '1G', '-O', 'qcow2', '-o', 'preallocation=foo'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=3k'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=7'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'extended_l2=on,cluster_size=4k'],
      ['--size', '1P', '-O', 'qcow2', '-o', 'cluster_size=512'],
      ['--size', '1G', '-O', 'foo'],
      ['--size', '1x'],
      ['--size', '1G', 'x.img'],
      ['-O', 'qcow2'],
      ['--output=xml', '--size', '1G'],
    ];
    for (const args of cases) await same(args);
    // vdisk names the file once where qemu-img names it twice.
    const missing = await vdisk(['measure', 'nothere.img']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, "vdisk: Could not open 'nothere.img': No such file or directory\n");
  });
});
