/**
 * vdisk io's qemu-io commands beyond read and write (readv, writev, aio_read, aio_write,
 * aio_flush, alloc, sleep, open, close) and its -d and -i options, run beside qemu-io on twin
 * images: the same reports (timing taken out), the same exit status, the same bytes written,
 * and data one tool writes reads back through the other. vdisk prints a failed command's
 * diagnostic on stderr (qemu-io on stdout): the line is the same apart from vdisk's reasons.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { hasCommand, lines, type RunResult, run, vdisk, withoutTiming } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';

const QEMU = hasCommand('qemu-img') && hasCommand('qemu-io');
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; the io command tests do not run');

function needQemu(t: TestContext): boolean {
  if (!QEMU) t.skip('qemu-img/qemu-io not installed');
  return QEMU;
}

const asArgs = (commands: string[]): string[] => commands.flatMap((c) => ['-c', c]);

/** Runs the same qemu-io arguments through qemu-io on q.* and vdisk io on v.* (same names otherwise). */
async function both(dir: string, args: string[]): Promise<{ q: RunResult; v: RunResult }> {
  const q = await run('qemu-io', args, { cwd: dir });
  const v = await vdisk(['io', ...args.map((a) => a.replace(/\bq\.(img|qcow2)\b/, 'v.$1'))], { cwd: dir });
  return { q, v };
}

async function twins(dir: string, format: string): Promise<void> {
  const ext = format === 'raw' ? 'img' : 'qcow2';
  const r = await run('qemu-img', ['create', '-q', '-f', format, `q.${ext}`, '1M'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  await copyFile(path.join(dir, `q.${ext}`), path.join(dir, `v.${ext}`));
}

describe('vdisk io prints what qemu-io prints', { skip: !QEMU && 'qemu-io not installed' }, () => {
  // Each line is one run of both tools on the same twin; requests in flight end with aio_flush,
  // so that the order of the reports is fixed.
  const scripts: string[][] = [
    ['writev -P 0xab 0 4k 4k', 'readv -P 0xab 0 4k 4k', 'readv -C -P 0xab 0 4k 512', 'readv -v 4000 16 16'],
    ['writev -q -P 0x11 512 512', 'writev -f -P 3 1k 1 2 3', 'readv -P 3 1k 6', 'readv 0 0', 'writev 0 0'],
    ['aio_write -P 0x22 0 8k', 'aio_flush', 'aio_read -P 0x22 0 4k 4k', 'aio_flush', 'aio_read -v 0 32'],
    ['aio_write -z 0 4k', 'aio_flush', 'aio_write -C -q 4k 4k', 'aio_write -f 8k 512', 'aio_flush', 'read -P 0 0 4k'],
    ['aio_write -i 0 4k', 'aio_read -i 0 4k', 'aio_read -P 0x99 0 512', 'aio_flush'],
    ['alloc 0', 'alloc 0 16k', 'alloc 1M', 'alloc 1023k 4k', 'alloc 1048575 2', 'alloc 0 0', 'alloc 0 3G'],
    ['write 64k 4k', 'alloc 0 128k', 'alloc 64k 512', 'alloc 68k 8k', 'alloc 8k', 'sleep 5', 'alloc 60k 8k'],
  ];
  for (const format of ['raw', 'qcow2']) {
    for (const script of scripts) {
      it(`${format}: ${script.join('; ')}`, async (t) => {
        if (!needQemu(t)) return;
        await withTempDir(async (dir) => {
          await twins(dir, format);
          const ext = format === 'raw' ? 'img' : 'qcow2';
          const { q, v } = await both(dir, ['-f', format, ...asArgs(script), `q.${ext}`]);
          assert.equal(v.code, q.code, v.stderr);
          assert.equal(withoutTiming(v.stdout), withoutTiming(q.stdout));
          assert.equal(v.stderr, '');
          const check = await run('qemu-img', ['check', '-q', `v.${ext}`], { cwd: dir });
          assert.equal(check.code, format === 'raw' ? 63 : 0, check.stderr);
          const same = await run('qemu-img', ['compare', `q.${ext}`, `v.${ext}`], { cwd: dir });
          assert.equal(same.code, 0, same.stdout);
        });
      });
    }
  }

  it("help lists the new commands with qemu-io's usage lines", async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await twins(dir, 'raw');
      const { q, v } = await both(dir, ['-f', 'raw', '-c', 'help', 'q.img']);
      const ours = lines(v.stdout).filter((l) => /^(readv|writev|aio_\w+|alloc|sleep|close) /.test(l));
      assert.equal(ours.length, 8);
      for (const line of ours) assert.ok(lines(q.stdout).includes(line), line);
    });
  });

  it('aio requests left in flight complete before the session ends', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await twins(dir, 'qcow2');
      const writes = Array.from({ length: 16 }, (_, i) => `aio_write -P ${i + 1} ${i * 64}k 64k`);
      const { q, v } = await both(dir, ['-f', 'qcow2', ...asArgs(writes), 'q.qcow2']);
      assert.equal(v.code, 0, v.stderr);
      assert.equal(q.code, 0);
      // The reports may come in any order; the set is qemu-io's.
      assert.deepEqual(lines(withoutTiming(v.stdout)).sort(), lines(withoutTiming(q.stdout)).sort());
      // Every write landed: qemu-io reads vdisk's image back.
      const reads = Array.from({ length: 16 }, (_, i) => `read -P ${i + 1} ${i * 64}k 64k`);
      const r = await run('qemu-io', ['-f', 'qcow2', ...asArgs(reads), 'v.qcow2'], { cwd: dir });
      assert.equal(r.code, 0, r.stdout);
      assert.doesNotMatch(r.stdout, /Pattern verification failed/);
    });
  });

  it('data written by qemu-io with writev reads back with vdisk readv and aio_read, and the reverse', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await twins(dir, 'qcow2');
      const q = await run('qemu-io', ['-f', 'qcow2', '-c', 'writev -P 0x5a 4k 1k 3k 60k', 'q.qcow2'], { cwd: dir });
      assert.equal(q.code, 0);
      const v = await vdisk(
        ['io', '-f', 'qcow2', '-c', 'readv -P 0x5a 4k 32k 32k', '-c', 'aio_read -P 0 0 4k', 'q.qcow2'],
        { cwd: dir },
      );
      assert.equal(v.code, 0, v.stderr);
      assert.doesNotMatch(v.stdout, /Pattern verification failed/);
      const w = await vdisk(['io', '-f', 'qcow2', '-c', 'aio_write -P 0x6b 128k 4k 60k', 'v.qcow2'], { cwd: dir });
      assert.equal(w.code, 0, w.stderr);
      const r = await run('qemu-io', ['-f', 'qcow2', '-c', 'readv -P 0x6b 128k 64k', 'v.qcow2'], { cwd: dir });
      assert.equal(r.code, 0);
      assert.doesNotMatch(r.stdout, /Pattern verification failed/);
    });
  });
});

describe('vdisk io opens and closes images as qemu-io does', { skip: !QEMU && 'qemu-io not installed' }, () => {
  it('open, close and open again, read-only, with -o driver= and -f', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await twins(dir, 'qcow2');
      const script = [
        'open -o driver=qcow2 q.qcow2',
        'aio_write -P 7 0 4k 4k',
        'close',
        'open -r -n -o driver=qcow2 q.qcow2',
        'read -P 7 0 8k',
        'alloc 0 64k',
        'close',
      ];
      const { q, v } = await both(dir, asArgs(script));
      assert.equal(v.code, 0, v.stderr);
      assert.equal(q.code, 0);
      assert.equal(withoutTiming(v.stdout), withoutTiming(q.stdout));
      // vdisk's own -f names the format the same way.
      const f = await vdisk(['io', '-c', 'open -r -f qcow2 v.qcow2', '-c', 'readv -P 7 0 4k 4k'], { cwd: dir });
      assert.equal(f.code, 0, f.stderr);
      assert.doesNotMatch(f.stdout, /Pattern verification failed/);
      const same = await run('qemu-img', ['compare', 'q.qcow2', 'v.qcow2'], { cwd: dir });
      assert.equal(same.code, 0, same.stdout);
    });
  });

  // [arguments, what vdisk's one diagnostic line says]: each fails in both and changes nothing.
  const failing: Array<[string[], RegExp]> = [
    [['-c', 'read 0 1'], /^no file open, try 'help open'$/],
    [['-f', 'raw', '-c', 'open q.img', 'q.img'], /^vdisk: file open already, try 'help close'$/],
    [['-c', 'open -d bogus q.img'], /^vdisk: Invalid discard option: bogus$/],
    [['-c', 'open -t bogus q.img'], /^vdisk: Invalid cache option: bogus/],
    [['-c', 'open nonexist.img'], /^vdisk: .*nonexist\.img.*No such file or directory/],
    [['-c', 'open'], /^bad argument count 0 to open, expected at least 1 arguments$/],
    [['-f', 'raw', '-c', 'sleep 1x', 'q.img'], /^1x is not a valid number$/],
    [['-f', 'raw', '-c', 'sleep 10 2', 'q.img'], /^bad argument count 2 to sleep, expected 1 arguments$/],
    [['-f', 'raw', '-c', 'alloc 0 1 2', 'q.img'], /^bad argument count 3 to alloc/],
    [['-f', 'raw', '-c', 'alloc x', 'q.img'], /^Parsing error: non-numeric argument.* -- x$/],
    [['-f', 'raw', '-c', 'readv 0', 'q.img'], /^bad argument count 1 to readv, expected at least 2 arguments$/],
    [['-f', 'raw', '-c', 'readv 2M 4k', 'q.img'], /^readv failed: Request past the end of the image/],
    [['-f', 'raw', '-c', 'writev 1M 1 1', 'q.img'], /^writev failed: /],
    [['-f', 'raw', '-c', 'readv 0 3G', 'q.img'], /^Argument '3G' exceeds maximum size 2147483136$/],
    [
      ['-f', 'raw', '-c', 'readv 0 1G 1G 1G', 'q.img'],
      /^The total number of bytes exceed the maximum size 2147483136$/,
    ],
    [['-f', 'raw', '-c', 'readv -P 0x300 0 1', 'q.img'], /^0x300 is not a valid pattern byte$/],
    [['-f', 'raw', '-c', 'readv -x 0 1', 'q.img'], /^readv: invalid option -- 'x'/],
    [['-f', 'raw', '-c', 'aio_write -u 0 4k', 'q.img'], /^-u requires -z to be specified$/],
    [['-f', 'raw', '-c', 'aio_write -z 0 4k 4k', 'q.img'], /^-z supports only a single length parameter$/],
    [['-f', 'raw', '-r', '-c', 'aio_write 0 1', 'q.img'], /^vdisk: The image is opened read-only$/],
    [['-f', 'raw', '-r', '-c', 'writev 0 1', 'q.img'], /^vdisk: The image is opened read-only$/],
    [['-f', 'raw', '-i', 'bogus', '-c', 'read 0 1', 'q.img'], /^vdisk: Invalid aio option: bogus$/],
    [['-f', 'raw', '-i', 'native', '-c', 'write 0 1', 'q.img'], /^vdisk: aio=native was specified, but it requires/],
    [['-f', 'raw', '-d', 'bogus', '-c', 'write 0 1', 'q.img'], /^vdisk: Invalid discard option: bogus$/],
  ];
  for (const [args, message] of failing) {
    it(`fails: ${args.join(' ')}`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        await twins(dir, 'raw');
        const before = await fileState(path.join(dir, 'v.img'));
        const { q, v } = await both(dir, args);
        assert.equal(q.code, 1, `qemu-io: ${q.stdout}${q.stderr}`);
        assert.equal(v.code, 1);
        assert.equal(lines(v.stderr).length, 1, v.stderr);
        assert.match(lines(v.stderr)[0]!, message);
        assert.deepEqual(await fileState(path.join(dir, 'v.img')), before);
      });
    });
  }

  it('aio failures are reported and leave the exit status alone, as in qemu-io', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await twins(dir, 'raw');
      const { q, v } = await both(dir, ['-f', 'raw', '-c', 'aio_read 2M 4k', '-c', 'aio_write 2M 1', 'q.img']);
      assert.equal(q.code, 0);
      assert.equal(v.code, 0);
      assert.deepEqual(
        lines(v.stderr)
          .map((l) => l.replace(/: .*/, ''))
          .sort(),
        ['aio_write failed', 'readv failed'],
      );
    });
  });
});

describe('vdisk io -d and -i take qemu-io values', { skip: !QEMU && 'qemu-io not installed' }, () => {
  for (const discard of ['unmap', 'on', 'ignore', 'off']) {
    it(`-d ${discard}: discards and write -z -u free space exactly when qemu-io's do`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        await twins(dir, 'qcow2');
        const script = ['write -P 1 0 192k', 'discard 0 64k', 'write -z -u 64k 64k'];
        const { q, v } = await both(dir, ['-d', discard, '-f', 'qcow2', ...asArgs(script), 'q.qcow2']);
        assert.equal(v.code, q.code, v.stderr);
        assert.equal(withoutTiming(v.stdout), withoutTiming(q.stdout));
        const map = async (file: string) =>
          (await run('qemu-img', ['map', '--output=json', file], { cwd: dir })).stdout;
        const without = (text: string) => text.replace(/, "offset": \d+/g, '');
        assert.equal(without(await map('v.qcow2')), without(await map('q.qcow2')));
        const same = await run('qemu-img', ['compare', 'q.qcow2', 'v.qcow2'], { cwd: dir });
        assert.equal(same.code, 0, same.stdout);
      });
    });
  }

  for (const aio of ['threads', 'io_uring']) {
    it(`-i ${aio} works as qemu-io's`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        await twins(dir, 'raw');
        const { q, v } = await both(dir, [
          '-i',
          aio,
          '-f',
          'raw',
          '-c',
          'write -P 9 0 4k',
          '-c',
          'read -P 9 0 4k',
          'q.img',
        ]);
        assert.equal(v.code, q.code, v.stderr);
        assert.equal(withoutTiming(v.stdout), withoutTiming(q.stdout));
        assert.ok((await readFile(path.join(dir, 'v.img'))).equals(await readFile(path.join(dir, 'q.img'))));
      });
    });
  }
});
