/**
 * Raw images against QEMU 7.x: what vdisk creates, qemu-img sees exactly as what qemu-img
 * creates; vdisk's info and map print qemu-img's text byte for byte; data written by vdisk io
 * reads back in qemu-io and the reverse; vdisk io prints qemu-io's lines; bad input fails in
 * both with the same message.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { hasCommand, lines, run, vdisk, withoutTiming } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const HAVE_QEMU_IMG = hasCommand('qemu-img');
const HAVE_QEMU_IO = hasCommand('qemu-io');

function needQemu(t: TestContext, io = false): boolean {
  if (!HAVE_QEMU_IMG) {
    t.skip('qemu-img not installed');
    return false;
  }
  if (io && !HAVE_QEMU_IO) {
    t.skip('qemu-io not installed');
    return false;
  }
  return true;
}

async function ok(command: string, args: string[], cwd?: string): Promise<string> {
  const r = await run(command, args, { cwd });
  assert.equal(r.code, 0, `${command} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function vdiskOk(args: string[], cwd?: string): Promise<string> {
  const r = await vdisk(args, { cwd });
  assert.equal(r.code, 0, `vdisk ${args.join(' ')} failed: ${r.stderr}`);
  assert.equal(r.stderr, '');
  return r.stdout;
}

function withoutFilename(info: string): Record<string, unknown> {
  const parsed = JSON.parse(info) as Record<string, unknown>;
  delete parsed.filename;
  return parsed;
}

describe('raw images created by vdisk look to qemu-img like its own', () => {
  const cases: Array<[string, string]> = [];
  for (const mode of ['off', 'falloc', 'full']) {
    for (const size of ['0', '100', '5000', '1M', '64M']) cases.push([mode, size]);
  }
  for (const [mode, size] of cases) {
    it(`preallocation=${mode}, size ${size}`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        // Relative names, so that the two tools' outputs name the file the same way.
        const created = await vdiskOk(['create', '-f', 'raw', '-o', `preallocation=${mode}`, 'v.img', size], dir);
        const reference = await ok(
          'qemu-img',
          ['create', '-f', 'raw', '-o', `preallocation=${mode}`, 'q.img', size],
          dir,
        );
        assert.equal(created, reference.replace("'q.img'", "'v.img'"));

        // qemu-img reports the same map and info for both images.
        const qmapV = await ok('qemu-img', ['map', '--output=json', 'v.img'], dir);
        const qmapQ = await ok('qemu-img', ['map', '--output=json', 'q.img'], dir);
        assert.deepEqual(JSON.parse(qmapV), JSON.parse(qmapQ));
        const qinfoV = await ok('qemu-img', ['info', '--output=json', '-f', 'raw', 'v.img'], dir);
        const qinfoQ = await ok('qemu-img', ['info', '--output=json', '-f', 'raw', 'q.img'], dir);
        assert.deepEqual(withoutFilename(qinfoV), withoutFilename(qinfoQ));

        // vdisk's info and map print what qemu-img prints, byte for byte.
        assert.equal(await vdiskOk(['map', '--output=json', 'v.img'], dir), qmapV);
        assert.equal(await vdiskOk(['map', 'v.img'], dir), await ok('qemu-img', ['map', 'v.img'], dir));
        assert.equal(await vdiskOk(['info', '--output=json', 'v.img'], dir), qinfoV);
        assert.equal(await vdiskOk(['info', 'v.img'], dir), await ok('qemu-img', ['info', 'v.img'], dir));
        assert.equal(await vdiskOk(['map', '--output=json', 'q.img'], dir), qmapQ);

        // Both files hold the same bytes. (Last: on ext4, reading a fallocated range puts pages
        // in the page cache, after which SEEK_DATA calls the range data, in QEMU and vdisk alike.)
        assert.ok((await readFile(path.join(dir, 'v.img'))).equals(await readFile(path.join(dir, 'q.img'))));
      });
    });
  }

  it('also after writes, discards and zero writes (map merging)', async (t) => {
    if (!needQemu(t, true)) return;
    await withTempDir(async (dir) => {
      await vdiskOk(['create', '-q', '-o', 'preallocation=falloc', 'v.img', '8M'], dir);
      await vdiskOk(
        [
          'io',
          '-f',
          'raw',
          '-c',
          'write -P 1 1M 64k',
          '-c',
          'write -P 2 1088k 64k',
          '-c',
          'write -P 3 3M 4k',
          '-c',
          'write -z -u 3M 1M',
          '-c',
          'discard 6M 1M',
          '-c',
          'write -P 4 8188k 4k',
          'v.img',
        ],
        dir,
      );
      for (const args of [['map', '--output=json'], ['map'], ['info', '--output=json'], ['info']]) {
        assert.equal(
          await vdiskOk([...args, 'v.img'], dir),
          await ok('qemu-img', [...args, 'v.img'], dir),
          args.join(' '),
        );
      }
      const start = ['--start-offset=1M', '--max-length=3M'];
      assert.equal(
        await vdiskOk(['map', '--output=json', ...start, 'v.img'], dir),
        await ok('qemu-img', ['map', '--output=json', ...start, 'v.img'], dir),
      );
    });
  });
});

describe('data crosses between vdisk io and qemu-io', () => {
  const writes = ['write -P 0xab 0 64k', 'write -P 0x12 1000 3000', 'write -z 128k 64k', 'write -P 0x5c 1048064 512'];
  const reads = [
    'read -P 0xab 0 1000',
    'read -P 0x12 1000 3000',
    'read -P 0xab 4000 61536',
    'read -P 0 64k 64k',
    'read -P 0 128k 64k',
    'read -P 0x5c 1048064 512',
  ];
  const asArgs = (commands: string[]): string[] => commands.flatMap((c) => ['-c', c]);

  for (const cache of ['writeback', 'writethrough', 'none', 'unsafe']) {
    it(`vdisk io (-t ${cache}) writes, qemu-io reads`, async (t) => {
      if (!needQemu(t, true)) return;
      await withTempDir(async (dir) => {
        await ok('qemu-img', ['create', '-q', '-f', 'raw', 'a.img', '1M'], dir);
        const w = await vdisk(['io', '-f', 'raw', '-t', cache, ...asArgs(writes), 'a.img'], {
          cwd: dir,
        });
        if (cache === 'none' && w.code !== 0 && /O_DIRECT/.test(w.stderr)) {
          t.skip('no O_DIRECT on this filesystem');
          return;
        }
        assert.equal(w.code, 0, w.stderr);
        const r = await run('qemu-io', ['-f', 'raw', ...asArgs(reads), 'a.img'], { cwd: dir });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.ok(!r.stdout.includes('Pattern verification failed'), r.stdout);
      });
    });
  }

  it('qemu-io writes, vdisk io reads', async (t) => {
    if (!needQemu(t, true)) return;
    await withTempDir(async (dir) => {
      await vdiskOk(['create', '-q', 'a.img', '1M'], dir);
      await ok('qemu-io', ['-f', 'raw', ...asArgs(writes), 'a.img'], dir);
      const r = await vdisk(['io', '-f', 'raw', ...asArgs(reads), 'a.img'], { cwd: dir });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.ok(!r.stdout.includes('Pattern verification failed'), r.stdout);
      // And a wrong pattern fails in both, with the same line.
      const bad = await vdisk(['io', '-f', 'raw', '-c', 'read -P 0xab 1000 10', 'a.img'], { cwd: dir });
      const qbad = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 1000 10', 'a.img'], { cwd: dir });
      assert.equal(bad.code, 1);
      assert.equal(qbad.code, 1);
      assert.equal(lines(bad.stdout)[0], lines(qbad.stdout)[0]);
      assert.equal(lines(bad.stdout)[0], 'Pattern verification failed at offset 1000, 10 bytes');
    });
  });

  it('vdisk io prints the lines qemu-io prints', async (t) => {
    if (!needQemu(t, true)) return;
    const commands = [
      'write -P 0xab 0 4k',
      'read -P 0xab 0 4k',
      'read -v 0 64',
      'write -P 0x41 3 37',
      'read -v 1 40',
      'write -z 4k 4k',
      'write -z -u -f 8k 4k',
      'write -f 0 512',
      'discard 64k 64k',
      'discard 0 0',
      'read 0 0',
      'read 0x10 0x10',
      'read 1.5k 512',
      'r 0 1b',
      'w -q 0 1',
      'read -C 0 4k',
      'write -C 0 4k',
      'read -P 0xcd -s 512 -l 512 0 4k',
      'flush',
      'map',
      'info',
      'length',
      'truncate 2M',
      'length',
      'truncate -m full 3M',
      'map',
      'help',
    ];
    await withTempDir(async (dir) => {
      await ok('qemu-img', ['create', '-q', '-f', 'raw', 'q.img', '1M'], dir);
      await copyFile(path.join(dir, 'q.img'), path.join(dir, 'v.img'));
      for (const command of commands) {
        const q = await run('qemu-io', ['-f', 'raw', '-c', command, 'q.img'], { cwd: dir });
        const v = await vdisk(['io', '-f', 'raw', '-c', command, 'v.img'], { cwd: dir });
        assert.equal(v.code, q.code, command);
        if (command === 'help') {
          // vdisk has a subset of qemu-io's commands: each of its lines is one of qemu-io's (read
          // and write have fewer flags; open takes vdisk's -f and -i).
          for (const line of lines(v.stdout).filter((l) => / -- /.test(l) && !/^(read|write|open) /.test(l))) {
            assert.ok(lines(q.stdout).includes(line), line);
          }
          continue;
        }
        assert.equal(withoutTiming(v.stdout), withoutTiming(q.stdout), command);
      }
      assert.ok((await readFile(path.join(dir, 'v.img'))).equals(await readFile(path.join(dir, 'q.img'))));
    });
  });

  it('failing commands fail in both (exit 1)', async (t) => {
    if (!needQemu(t, true)) return;
    const failing = [
      'read 1M 1',
      'write 1048575 2',
      'discard 2M 1',
      'read -P 0x11 0 512',
      'read abc 1',
      'read 0 3G',
      'read -x 0 1',
      'read 0',
      'write -u 0 4k',
      'write -z -P 1 0 4k',
      'write -P 300 0 1',
      'frobnicate',
      'length x',
    ];
    await withTempDir(async (dir) => {
      await ok('qemu-img', ['create', '-q', '-f', 'raw', 'a.img', '1M'], dir);
      for (const command of failing) {
        const q = await run('qemu-io', ['-f', 'raw', '-c', command, 'a.img'], { cwd: dir });
        const v = await vdisk(['io', '-f', 'raw', '-c', command, 'a.img'], { cwd: dir });
        assert.equal(q.code, 1, `qemu-io ${command}`);
        assert.equal(v.code, 1, `vdisk io ${command}`);
        assert.ok(lines(v.stderr).length <= 1, `${command}: ${v.stderr}`);
      }
    });
  });

  it('image locks: vdisk io and qemu-io exclude each other', async (t) => {
    if (!needQemu(t, true)) return;
    await withTempDir(async (dir) => {
      await vdiskOk(['create', '-q', 'a.img', '1M'], dir);
      // qemu-io holds the image while it runs a slow command; vdisk must not write meanwhile.
      const holder = run('qemu-io', ['-f', 'raw', '-c', 'sleep 1500', 'a.img'], { cwd: dir });
      await new Promise((resolve) => setTimeout(resolve, 500));
      const v = await vdisk(['io', '-f', 'raw', '-c', 'write 0 1', 'a.img'], { cwd: dir });
      await holder;
      assert.equal(v.code, 1);
      assert.match(v.stderr, /^vdisk: .*Is another process using the image \[a\.img\]\?\n$/);
    });
  });
});

describe('bad input fails in vdisk as in qemu-img, with the same message', () => {
  // [qemu-img create arguments]; vdisk gets the same ones.
  const cases: string[][] = [
    ['x.img', 'abc'],
    ['x.img', '1.5'],
    ['x.img', '16E'],
    ['-o', 'preallocation=metadata', 'x.img', '1M'],
    ['-o', 'preallocation=bogus', 'x.img', '1M'],
    ['-o', 'foo=bar', 'x.img', '1M'],
    ['-o', 'size=1M', 'x.img', '1M'],
    ['x.img'],
    ['-o', ',', 'x.img', '1M'],
    ['-f', 'bogus', 'x.img', '1M'],
    ['nodir/x.img', '1M'],
    ['x.img', '1P'],
  ];
  for (const args of cases) {
    it(`create ${args.join(' ')}`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        const q = await run('qemu-img', ['create', ...args], { cwd: dir });
        const v = await vdisk(['create', ...args], { cwd: dir });
        if (q.code === 0 && args.includes('1P')) {
          t.skip('this filesystem holds 1 PiB files');
          return;
        }
        assert.equal(q.code, 1);
        assert.equal(v.code, 1);
        // qemu-img splits the size message over two lines; vdisk prints it as one.
        const qemuMessage = lines(q.stderr)
          .map((l) => l.replace(/^qemu-img: /, ''))
          .join(' ');
        assert.deepEqual(lines(v.stderr), [`vdisk: ${qemuMessage}`]);
      });
    });
  }
});
