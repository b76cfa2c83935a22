/**
 * vdisk convert --bitmaps against qemu-img convert --bitmaps: from one source with written
 * bitmaps, both targets list the same bitmaps and export the same dirty maps through qemu-nbd -B,
 * hold the same data, and pass qemu-img check. The refusals (a raw side, a v2 target, an
 * inconsistent bitmap) exit as qemu-img does and leave no target behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { qemuDirtyMap } from '../helpers/dirty-map.js';
import { hasCommand, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { run, runOk } from '../helpers/tools.js';

const TOOLS = ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'];
const missing = TOOLS.filter((t) => !hasCommand(t));
if (missing.length > 0)
  console.error(`SKIPPED: ${missing.join(', ')} not installed; convert --bitmaps tests do not run`);
const skip = missing.length > 0 && `not installed: ${missing.join(', ')}`;

function bitmapList(image: string): unknown {
  const info = JSON.parse(runOk('qemu-img', ['info', '--output=json', image]));
  return info['format-specific'].data.bitmaps;
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** A source with three written bitmaps (one disabled before the last writes). */
function makeSource(dir: string): string {
  const src = join(dir, 'src.qcow2');
  runOk('qemu-img', ['create', '-q', '-f', 'qcow2', src, '64M']);
  runOk('qemu-io', ['-c', 'write -P 1 0 2M', src]);
  runOk('qemu-img', ['bitmap', '--add', src, 'full']);
  runOk('qemu-img', ['bitmap', '--add', '-g', '512', src, 'fine']);
  runOk('qemu-img', ['bitmap', '--add', '-g', '2M', src, 'coarse']);
  runOk('qemu-io', ['-c', 'write -P 2 1M 4k', '-c', 'write -P 3 30M 1k', src]);
  runOk('qemu-img', ['bitmap', '--disable', src, 'coarse']);
  runOk('qemu-io', ['-c', 'write -P 4 50M 64k', src]);
  return src;
}

describe('vdisk convert --bitmaps against qemu-img convert --bitmaps', { skip }, () => {
  it('copies every bitmap with its bits, granularity and state', async () => {
    await withTempDir(async (dir) => {
      const src = makeSource(dir);
      const ours = join(dir, 'ours.qcow2');
      const theirs = join(dir, 'theirs.qcow2');
      const r = await vdisk(['convert', '--bitmaps', '-O', 'qcow2', src, ours]);
      assert.equal(r.code, 0, r.stderr);
      runOk('qemu-img', ['convert', '--bitmaps', '-O', 'qcow2', src, theirs]);
      assert.deepEqual(bitmapList(ours), bitmapList(theirs));
      assert.equal(run('qemu-img', ['check', ours]).status, 0);
      assert.equal(run('qemu-img', ['compare', ours, theirs]).status, 0);
      for (const name of ['full', 'fine', 'coarse']) {
        const map = await qemuDirtyMap(ours, name);
        assert.deepEqual(map, await qemuDirtyMap(theirs, name), `bitmap ${name}`);
        assert.deepEqual(map, await qemuDirtyMap(src, name), `bitmap ${name} against the source`);
      }
    });
  });

  it('refuses as qemu-img does, and leaves no target', async () => {
    await withTempDir(async (dir) => {
      const src = makeSource(dir);
      const raw = join(dir, 'src.raw');
      runOk('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
      const broken = join(dir, 'broken.qcow2');
      runOk('qemu-img', ['convert', '--bitmaps', '-O', 'qcow2', src, broken]);
      // Killed mid-session: every bitmap is left in use.
      const io = spawn('qemu-io', ['-f', 'qcow2', broken], { stdio: ['pipe', 'pipe', 'ignore'] });
      await new Promise<void>((resolve) => {
        io.stdout.on('data', (d: Buffer) => d.toString().includes('wrote') && resolve());
        io.stdin.write('write 0 4k\n');
      });
      io.kill('SIGKILL');
      await new Promise((resolve) => io.on('exit', resolve));
      const cases: string[][] = [
        ['-O', 'raw', src],
        ['-f', 'raw', '-O', 'qcow2', raw],
        ['-O', 'qcow2', '-o', 'compat=0.10', src],
        ['-O', 'qcow2', broken],
      ];
      for (const [i, args] of cases.entries()) {
        const ours = join(dir, `ours${i}`);
        const theirs = join(dir, `theirs${i}`);
        const v = await vdisk(['convert', '--bitmaps', ...args, ours]);
        const q = run('qemu-img', ['convert', '--bitmaps', ...args, theirs]);
        assert.equal(v.code, q.status, `${args.join(' ')}: ${v.stderr}`);
        assert.equal(v.code, 1);
        assert.match(v.stderr, /^vdisk: (source|target): [^\n]+\n$/);
        assert.equal(await exists(ours), false, `${args.join(' ')} left a target`);
      }
      const skipped = join(dir, 'skipped.qcow2');
      const v = await vdisk(['convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', broken, skipped]);
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stderr, /^vdisk: warning: Skipping inconsistent bitmap 'coarse'\n/);
      assert.equal(bitmapList(skipped), undefined);
      const noBitmaps = await vdisk(['convert', '--skip-broken-bitmaps', '-O', 'qcow2', src, join(dir, 'x.qcow2')]);
      assert.equal(noBitmaps.code, 1);
      assert.equal(noBitmaps.stderr, 'vdisk: Use of --skip-broken-bitmaps requires --bitmaps\n');
    });
  });
});
