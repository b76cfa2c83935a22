/**
 * vdisk bitmap against qemu-img bitmap: the same operations on twin images give the same bitmap
 * list in qemu-img info and the same dirty maps through qemu-nbd -B; the same mistakes give the
 * same exit status and message (vdisk's one line), and change nothing.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { qemuDirtyMap } from '../helpers/dirty-map.js';
import { hasCommand, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { run, runOk } from '../helpers/tools.js';

const TOOLS = ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'];
const missing = TOOLS.filter((t) => !hasCommand(t));
if (missing.length > 0) console.error(`SKIPPED: ${missing.join(', ')} not installed; bitmap command tests do not run`);
const skip = missing.length > 0 && `not installed: ${missing.join(', ')}`;

function bitmapList(image: string): unknown {
  const info = JSON.parse(runOk('qemu-img', ['info', '--output=json', image]));
  return info['format-specific'].data.bitmaps;
}

async function twins(dir: string, options = 'cluster_size=65536'): Promise<[string, string]> {
  const theirs = join(dir, 'theirs.qcow2');
  const ours = join(dir, 'ours.qcow2');
  runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, theirs, '64M']);
  await copyFile(theirs, ours);
  return [ours, theirs];
}

/** Runs `bitmap <args> IMAGE <name>` with both tools, each on its twin; the exit codes must agree. */
async function both(ours: string, theirs: string, args: string[], name: string): Promise<string> {
  const v = await vdisk(['bitmap', ...args, ours, name]);
  const q = run('qemu-img', ['bitmap', ...args, theirs, name]);
  assert.equal(v.code, q.status, `bitmap ${args.join(' ')} ${name}: vdisk ${v.stderr} qemu-img ${q.stderr}`);
  if (q.status !== 0 && /Could not open/.test(q.stderr)) {
    assert.match(v.stderr, /^vdisk: Could not open '[^']+': No such file or directory\n$/);
  } else if (q.status !== 0) {
    // QEMU's hint after the message goes on the same line in vdisk; QEMU names the image by its
    // node name, vdisk by its file name.
    const first = q.stderr
      .split('\n')[0]!
      .replace(/^qemu-img: /, 'vdisk: ')
      .replace(/#block[0-9]+/, 'IMAGE');
    assert.ok(v.stderr.replace(ours, 'IMAGE').startsWith(first), `vdisk: ${v.stderr} qemu-img: ${q.stderr}`);
    assert.equal(v.stderr.split('\n').length, 2, v.stderr);
  }
  return v.stderr;
}

async function sameMaps(ours: string, theirs: string, names: string[]): Promise<void> {
  assert.deepEqual(bitmapList(ours), bitmapList(theirs));
  assert.equal(run('qemu-img', ['check', ours]).status, 0);
  for (const name of names) {
    assert.deepEqual(await qemuDirtyMap(ours, name), await qemuDirtyMap(theirs, name), `bitmap ${name}`);
  }
}

function ioBoth(ours: string, theirs: string, ...commands: string[]): void {
  const args = commands.flatMap((c) => ['-c', c]);
  runOk('qemu-io', ['-f', 'qcow2', ...args, ours]);
  runOk('qemu-io', ['-f', 'qcow2', ...args, theirs]);
}

describe('vdisk bitmap against qemu-img bitmap', { skip }, () => {
  it('add, disable, enable, merge, clear and remove give the same bitmaps', async () => {
    await withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir);
      await both(ours, theirs, ['--add'], 'a');
      await both(ours, theirs, ['--add', '-g', '512'], 'b');
      await both(ours, theirs, ['--add', '--disable', '-g', '1M'], 'c');
      await both(ours, theirs, ['--add', '-g', '128k', '-f', 'qcow2'], 'd');
      await sameMaps(ours, theirs, ['a', 'b', 'c', 'd']);
      // QEMU's writes set the bits; vdisk must read them back and keep them.
      ioBoth(ours, theirs, 'write -P 1 1M 4k', 'write -P 2 40M 100k', 'discard 7M 64k');
      await both(ours, theirs, ['--merge', 'b'], 'c');
      await both(ours, theirs, ['--add', '--merge', 'b', '--merge', 'a', '--disable'], 'e');
      await both(ours, theirs, ['--enable'], 'c');
      await both(ours, theirs, ['--disable'], 'a');
      await both(ours, theirs, ['--clear'], 'b');
      await both(ours, theirs, ['--remove', '--add', '-g', '4k'], 'd');
      await sameMaps(ours, theirs, ['a', 'b', 'c', 'd', 'e']);
      ioBoth(ours, theirs, 'write -P 3 2M 512');
      await sameMaps(ours, theirs, ['a', 'b', 'c', 'd']);
      // A source bitmap in another image (opened read-only).
      const other = join(dir, 'other.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', other, '64M']);
      runOk('qemu-img', ['bitmap', '--add', '-g', '512', other, 's']);
      runOk('qemu-io', ['-c', 'write 50M 1k', other]);
      await both(ours, theirs, ['--merge', 's', '-b', other, '-F', 'qcow2'], 'a');
      await sameMaps(ours, theirs, ['a', 'b', 'c', 'd']);
      // vdisk info prints the bitmaps as qemu-img info does, in both layouts.
      for (const args of [[], ['--output=json']]) {
        const v = await vdisk(['info', ...args, ours]);
        assert.equal(v.stdout, runOk('qemu-img', ['info', ...args, ours]));
        assert.match(v.stdout, /granularity/);
      }
      await both(ours, theirs, ['--remove'], 'a');
      await both(ours, theirs, ['--remove'], 'b');
      await both(ours, theirs, ['--remove'], 'c');
      await both(ours, theirs, ['--remove'], 'd');
      await both(ours, theirs, ['--remove'], 'e');
      assert.equal(bitmapList(ours), undefined);
      assert.equal(run('qemu-img', ['check', ours]).status, 0);
      assert.equal(run('qemu-img', ['compare', ours, theirs]).status, 0);
    });
  });

  it('mistakes fail as in qemu-img and leave the image as it was', async () => {
    await withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir);
      await both(ours, theirs, ['--add'], 'a');
      const before = await readFile(ours);
      const cases: [string[], string][] = [
        [['--add'], 'a'],
        [['--add', '-g', '1000'], 'x'],
        [['--add', '-g', '256'], 'x'],
        [['--add', '-g', '4G'], 'x'],
        [['--add', '-g', '96k'], 'x'],
        [['--add'], ''],
        [['--clear'], 'nope'],
        [['--remove'], 'nope'],
        [['--merge', 'nope'], 'a'],
        [['--clear', '-g', '64k'], 'a'],
        [[], 'a'],
        [['--merge', 'a', '-b', join(dir, 'missing.qcow2')], 'a'],
      ];
      for (const [args, name] of cases) {
        await both(ours, theirs, args, name);
        assert.ok(before.equals(await readFile(ours)), `bitmap ${args.join(' ')} ${name} changed the image`);
      }
      const raw = join(dir, 'disk.raw');
      runOk('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
      const r = await vdisk(['bitmap', '--add', '-f', 'raw', raw, 'a']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^vdisk: Operation add on bitmap a failed: Can't store persistent bitmaps/);
    });
  });

  it('a v2 image cannot hold bitmaps', async () => {
    await withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir, 'compat=0.10');
      const before = await readFile(ours);
      await both(ours, theirs, ['--add'], 'a');
      assert.ok(before.equals(await readFile(ours)));
    });
  });
});
