/**
 * vdisk bench against qemu-img bench on twin images: the same summary lines (the time taken
 * out), the same exit status and message, the same data written (read back with qemu-io and
 * compared with qemu-img compare), and an image left as it was by a run that fails.
 */
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { hasCommand, lines, run, vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';

const QEMU = hasCommand('qemu-img') && hasCommand('qemu-io');
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; the bench tests do not run');

function needQemu(t: TestContext): boolean {
  if (!QEMU) t.skip('qemu-img/qemu-io not installed');
  return QEMU;
}

const untimed = (text: string) =>
  text.replace(/^Run completed in \d+\.\d{3} seconds\.$/m, 'Run completed in T seconds.');

/** The guest ranges qemu-img map says are allocated in the image itself, merged. */
async function allocated(dir: string, file: string): Promise<Array<[number, number]>> {
  const r = await run('qemu-img', ['map', '--output=json', file], { cwd: dir });
  const ranges: Array<[number, number]> = [];
  for (const e of JSON.parse(r.stdout) as Array<{ start: number; length: number; present: boolean }>) {
    if (!e.present) continue;
    const last = ranges[ranges.length - 1];
    if (last && last[0] + last[1] === e.start) last[1] += e.length;
    else ranges.push([e.start, e.length]);
  }
  return ranges;
}

async function twins(dir: string): Promise<void> {
  const r = await run('qemu-img', ['create', '-q', '-f', 'qcow2', 'q.qcow2', '16M'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  await copyFile(path.join(dir, 'q.qcow2'), path.join(dir, 'v.qcow2'));
}

describe('vdisk bench runs what qemu-img bench runs', { skip: !QEMU && 'qemu-img not installed' }, () => {
  const cases: string[][] = [
    ['-c', '1000'],
    ['-c', '300', '-w', '-d', '4', '-s', '64k', '-S', '128k', '-o', '1M', '--pattern=0xab'],
    ['-c', '200', '-w', '-d', '8', '--flush-interval=16', '--pattern=7', '-S', '64k'],
    ['-c', '200', '-w', '-d', '8', '--flush-interval=8', '--no-drain', '--pattern=9', '-S', '96k', '-o', '8M'],
    ['-c', '100', '-w', '-S', '1M', '--pattern=0x3c', '-s', '8k'],
    ['-q', '-c', '10', '--no-drain'],
    ['-c', '0'],
    ['-c', '5', '-s', '0', '-S', '0'],
    ['-c', '50', '-d', '100000', '-t', 'none', '-n'],
    ['-c', '50', '-i', 'io_uring', '-U', '-f', 'qcow2'],
    ['-c', '50', '-t', 'writethrough', '-w', '-d', '1'],
  ];
  for (const args of cases) {
    it(args.join(' '), async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        await twins(dir);
        const q = await run('qemu-img', ['bench', ...args, 'q.qcow2'], { cwd: dir });
        const v = await vdisk(['bench', ...args, 'v.qcow2'], { cwd: dir });
        if (args.includes('none') && q.code !== 0 && /O_DIRECT|Invalid argument/.test(q.stderr)) {
          t.skip('no O_DIRECT on this filesystem');
          return;
        }
        assert.equal(q.code, 0, q.stderr);
        assert.equal(v.code, 0, v.stderr);
        assert.equal(v.stderr, '');
        assert.equal(untimed(v.stdout), untimed(q.stdout));
        assert.match(v.stdout, /Run completed in \d+\.\d{3} seconds\.\n$/);
        const check = await run('qemu-img', ['check', '-q', 'v.qcow2'], { cwd: dir });
        assert.equal(check.code, 0, check.stderr);
        // The same data written, the same guest ranges allocated (the host file's holes in a
        // partly written cluster are vdisk's own, so block status is not compared).
        const same = await run('qemu-img', ['compare', 'q.qcow2', 'v.qcow2'], { cwd: dir });
        assert.equal(same.code, 0, same.stdout);
        assert.deepEqual(await allocated(dir, 'v.qcow2'), await allocated(dir, 'q.qcow2'));
      });
    });
  }

  it('writes land where qemu-io finds them: pattern, step and the wrap at the end of the image', async (t) => {
    if (!needQemu(t)) return;
    await withTempDir(async (dir) => {
      await twins(dir);
      // 20 writes of 64k every 1M from 8M: offsets 8M … 15M, then 0 … 11M after the wrap.
      const v = await vdisk(
        ['bench', '-w', '-c', '20', '-d', '3', '-s', '64k', '-S', '1M', '-o', '8M', '--pattern=0x5a', 'v.qcow2'],
        {
          cwd: dir,
        },
      );
      assert.equal(v.code, 0, v.stderr);
      const reads = [
        'read -P 0x5a 8M 64k',
        'read -P 0x5a 15M 64k',
        'read -P 0x5a 0 64k',
        'read -P 0x5a 11M 64k',
        'read -P 0 64k 960k',
      ];
      const r = await run('qemu-io', ['-f', 'qcow2', ...reads.flatMap((c) => ['-c', c]), 'v.qcow2'], { cwd: dir });
      assert.equal(r.code, 0, r.stdout);
      assert.doesNotMatch(r.stdout, /Pattern verification failed/);
    });
  });
});

describe('vdisk bench refuses what qemu-img bench refuses', { skip: !QEMU && 'qemu-img not installed' }, () => {
  const cases: string[][] = [
    ['-c', '100', '-w', '--flush-interval=10'],
    ['-c', '10', '--flush-interval=10'],
    ['-c', 'x'],
    ['-d', 'x'],
    ['-s', 'x'],
    ['-S', 'x'],
    ['-o', 'x'],
    ['-s', '3G'],
    ['--pattern=300', '-w'],
    ['--pattern=x'],
    ['--flush-interval=x'],
    ['-t', 'bogus'],
    ['-i', 'bogus'],
    ['-c', '5', '-n'],
    ['-c', '5', '-U', '-w'],
    ['-c', '10', '-w', '-o', '16M'],
    ['-c', '10', '-w', '-o', '15M', '-s', '2M'],
    ['-f', 'raw', '-c', '5', '-w', '-o', '1M'],
  ];
  for (const args of cases) {
    it(`bench ${args.join(' ')}`, async (t) => {
      if (!needQemu(t)) return;
      await withTempDir(async (dir) => {
        await twins(dir);
        const before = await fileState(path.join(dir, 'v.qcow2'));
        const q = await run('qemu-img', ['bench', ...args, 'q.qcow2'], { cwd: dir });
        const v = await vdisk(['bench', ...args, 'v.qcow2'], { cwd: dir });
        assert.equal(v.code, q.code, `qemu-img: ${q.stderr}`);
        if (q.code === 0) {
          // -f raw over a qcow2 file: both write raw bytes where the header was.
          const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', 'q.qcow2', 'v.qcow2'], { cwd: dir });
          assert.equal(same.code, 0, same.stdout);
          return;
        }
        assert.equal(v.code, 1);
        assert.equal(lines(v.stderr).length, 1, v.stderr);
        const qemuText = lines(q.stderr)
          .map((l) => l.replace(/^qemu-img: /, ''))
          .join(' ')
          .replace(/^Could not open '[^']*': /, '')
          .replace(/: Input\/output error$/, ':');
        const ours = v.stderr.replace(/^vdisk: /, '').trimEnd();
        assert.ok(ours.startsWith(qemuText), `qemu-img: ${qemuText}\nvdisk: ${ours}`);
        // A failed run of reads changes nothing; writes that failed at the end wrote nothing.
        if (!args.includes('-w') || !/Failed request/.test(ours)) {
          assert.deepEqual(await fileState(path.join(dir, 'v.qcow2')), before);
        }
      });
    });
  }
});
