/**
 * vdisk dd against qemu-img dd on the same input and operands: the same output (raw: byte for
 * byte; qcow2: the same content and allocation, passing qemu-img check), the same exit status
 * and message, and nothing left behind or changed when it fails.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { hasCommand, lines, run, vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';

const QEMU = hasCommand('qemu-img') && hasCommand('qemu-io');
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; the dd tests do not run');

function needQemu(t: TestContext): boolean {
  if (!QEMU) t.skip('qemu-img/qemu-io not installed');
  return QEMU;
}

async function ok(command: string, args: string[], cwd: string): Promise<string> {
  const r = await run(command, args, { cwd });
  assert.equal(r.code, 0, `${command} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A 1 MiB qcow2 input with data, a partial cluster, zeros and holes. */
async function input(dir: string): Promise<void> {
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', 'in.qcow2', '1M'], dir);
  const writes = ['write -P 0x11 0 64k', 'write -P 0x22 300k 5000', 'write -z 512k 64k', 'write -P 0x33 1020k 4k'];
  await ok('qemu-io', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), 'in.qcow2'], dir);
}

describe('vdisk dd makes what qemu-img dd makes', { skip: !QEMU && 'qemu-img not installed' }, () => {
  const cases: string[][] = [
    ['if=in.qcow2'],
    ['-f', 'qcow2', 'bs=4k', 'count=100', 'skip=10', 'if=in.qcow2'],
    ['bs=1.5k', 'count=1k', 'if=in.qcow2'],
    ['bs=3', 'skip=1000', 'count=2000', 'if=in.qcow2'],
    ['bs=64k', 'skip=16', 'if=in.qcow2'],
    ['bs=4k', 'skip=256', 'if=in.qcow2'],
    ['count=0', 'if=in.qcow2'],
    ['bs=1M', 'count=1', 'if=in.qcow2', 'if=in.qcow2'],
    ['bs=2147483647', 'if=in.qcow2'],
  ];
  for (const outputFormat of ['raw', 'qcow2']) {
    for (const args of cases) {
      it(`-O ${outputFormat} ${args.join(' ')}`, async (t) => {
        if (!needQemu(t)) return;
        await withTempDir(async (dir) => {
          await input(dir);
          const q = await run('qemu-img', ['dd', '-O', outputFormat, ...args, 'of=q.out'], { cwd: dir });
          const v = await vdisk(['dd', '-O', outputFormat, ...args, 'of=v.out'], { cwd: dir });
          assert.equal(q.code, 0, q.stderr);
          assert.equal(v.code, 0, v.stderr);
          assert.equal(v.stderr, '');
          const ours = await readFile(path.join(dir, 'v.out'));
          const theirs = await readFile(path.join(dir, 'q.out'));
          if (outputFormat === 'raw') {
            assert.ok(ours.equals(theirs));
            return;
          }
          // Byte for byte, but for the zeros qemu-img writes out to the end of a last cluster
          // the output fills only in part (vdisk leaves the file shorter there).
          assert.ok(ours.length <= theirs.length && theirs.length - ours.length < 65536);
          assert.ok(theirs.subarray(0, ours.length).equals(ours));
          assert.ok(theirs.subarray(ours.length).every((byte) => byte === 0));
          await ok('qemu-img', ['check', '-q', 'v.out'], dir);
          const info = async (f: string) => JSON.parse(await ok('qemu-img', ['info', '--output=json', f], dir));
          assert.equal((await info('v.out'))['virtual-size'], (await info('q.out'))['virtual-size']);
          await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', 'q.out', 'v.out'], dir);
        });
      });
    }
  }

  it('data read back with qemu-io: the skipped range is gone, the rest is where dd put it', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await input(dir);
      const v = await vdisk(['dd', '-O', 'qcow2', 'bs=4k', 'skip=75', 'if=in.qcow2', 'of=v.qcow2'], { cwd: dir });
      assert.equal(v.code, 0, v.stderr);
      // 300k in the input is 0 in the output; 1020k is 720k.
      const reads = ['read -P 0x22 0 5000', 'read -P 0 5000 1000', 'read -P 0x33 720k 4k', 'read -P 0 212k 64k'];
      const r = await ok('qemu-io', ['-f', 'qcow2', ...reads.flatMap((c) => ['-c', c]), 'v.qcow2'], dir);
      assert.doesNotMatch(r, /Pattern verification failed/);
    });
  });

  it('a skip past the end: an empty output and a warning, status 0, as qemu-img', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await input(dir);
      for (const operands of [
        ['bs=4k', 'skip=1000'],
        ['bs=4k', 'skip=3', 'count=2'],
      ]) {
        const q = await run('qemu-img', ['dd', ...operands, 'if=in.qcow2', 'of=q.out'], { cwd: dir });
        const v = await vdisk(['dd', ...operands, 'if=in.qcow2', 'of=v.out'], { cwd: dir });
        assert.equal(v.code, q.code);
        assert.equal(v.code, 0);
        assert.equal(v.stderr, q.stderr.replace(/^qemu-img: /, 'vdisk: '));
        assert.equal((await fileState(path.join(dir, 'v.out'))).size, 0);
      }
    });
  });
});

describe('vdisk dd refuses what qemu-img dd refuses', { skip: !QEMU && 'qemu-img not installed' }, () => {
  const cases: string[][] = [
    ['bs=0', 'if=in.qcow2'],
    ['bs=x', 'if=in.qcow2'],
    ['bs=3G', 'if=in.qcow2'],
    ['count=-1', 'if=in.qcow2'],
    ['skip=1x', 'if=in.qcow2'],
    ['count=8E', 'bs=1', 'if=in.qcow2'],
    ['foo=bar', 'if=in.qcow2'],
    ['junk', 'if=in.qcow2'],
    ['if=missing.img'],
    ['-f', 'raw', 'if=in.qcow2', '-O', 'bogus'],
    ['-f', 'qcow2', 'if=plain.txt'],
    [],
  ];
  for (const args of cases) {
    it(`dd ${args.join(' ')}`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        await input(dir);
        await writeFile(path.join(dir, 'plain.txt'), 'not an image\n');
        // An existing output stays as it was.
        await writeFile(path.join(dir, 'v.out'), 'old contents\n');
        const before = await fileState(path.join(dir, 'v.out'));
        const q = await run('qemu-img', ['dd', ...args, 'of=q.out'], { cwd: dir });
        const v = await vdisk(['dd', ...args, 'of=v.out'], { cwd: dir });
        assert.equal(q.code, 1, q.stderr);
        assert.equal(v.code, 1);
        assert.equal(lines(v.stderr).length, 1, v.stderr);
        // qemu-img's text, on one line (it wraps the suffix message over two).
        const qemuText = lines(q.stderr)
          .map((l) => l.replace(/^qemu-img: /, ''))
          .join(' ');
        const ours = v.stderr.replace(/^vdisk: /, '').trimEnd();
        assert.ok(
          qemuText === ours || qemuText.endsWith(ours) || ours.startsWith(qemuText),
          `qemu-img: ${qemuText}\nvdisk: ${ours}`,
        );
        assert.deepEqual(await fileState(path.join(dir, 'v.out')), before);
      });
    });
  }

  it('Must specify both input and output files', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await input(dir);
      for (const args of [['if=in.qcow2'], ['of=x.out'], ['bs=4k']]) {
        const q = await run('qemu-img', ['dd', ...args], { cwd: dir });
        const v = await vdisk(['dd', ...args], { cwd: dir });
        assert.equal(q.code, 1);
        assert.equal(v.code, 1);
        assert.equal(v.stderr, 'vdisk: Must specify both input and output files\n');
      }
    });
  });
});

describe('vdisk dd on a damaged input', { skip: !QEMU && 'qemu-img not installed' }, () => {
  it('fails as qemu-img does, leaves no output and the input as it was', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await input(dir);
      // The L1 entry names an L2 table at an unaligned offset.
      const file = path.join(dir, 'in.qcow2');
      const image = await readFile(file);
      const l1 = Number(image.readBigUInt64BE(40));
      image.writeBigUInt64BE((1n << 63n) | 0x10200n, l1);
      await writeFile(file, image);
      const before = await fileState(file);
      const q = await run('qemu-img', ['dd', '-O', 'qcow2', 'if=in.qcow2', 'of=q.out'], { cwd: dir });
      const v = await vdisk(['dd', '-O', 'qcow2', 'if=in.qcow2', 'of=v.out'], { cwd: dir });
      assert.equal(q.code, 1);
      assert.equal(v.code, 1);
      assert.deepEqual(lines(v.stderr), ['vdisk: L2 table offset 0x10200 unaligned (L1 index: 0x0)']);
      assert.equal((await fileState(path.join(dir, 'v.out'))).exists, false);
      assert.deepEqual(await fileState(file), before);
    });
  });
});
