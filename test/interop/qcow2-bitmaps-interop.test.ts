/**
 * Persistent dirty bitmaps against QEMU: twin images with bitmaps that qemu-img bitmap added, one
 * written by vdisk, the other by qemu-io with the same commands. Afterwards qemu-img sees the
 * same bitmaps (not in use), both images pass qemu-img check, their contents compare identical,
 * and the dirty map of each bitmap that qemu-nbd -B exports is the same for both. A process
 * killed mid-session leaves the bitmaps in use, as QEMU does, and nothing else wrong.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { dirtyRanges, qemuDirtyMap } from '../helpers/dirty-map.js';
import { hasCommand, VDISK_MAIN, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { run, runOk } from '../helpers/tools.js';

const TOOLS = ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'];
const missing = TOOLS.filter((t) => !hasCommand(t));
if (missing.length > 0) console.error(`SKIPPED: ${missing.join(', ')} not installed; bitmap interop tests do not run`);
const skip = missing.length > 0 && `not installed: ${missing.join(', ')}`;

const BITMAPS = ['b0', 'b1', 'b2', 'b3'];

/** One image with four bitmaps: default granularity, 1 MiB disabled, 512 bytes, 4 MiB. */
async function twins(dir: string, size = '64M', options = 'cluster_size=65536'): Promise<[string, string]> {
  const theirs = join(dir, 'theirs.qcow2');
  const ours = join(dir, 'ours.qcow2');
  runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, theirs, size]);
  runOk('qemu-io', ['-c', 'write -P 0x11 0 1M', theirs]);
  runOk('qemu-img', ['bitmap', '--add', theirs, 'b0']);
  runOk('qemu-img', ['bitmap', '--add', '-g', '1M', theirs, 'b1']);
  runOk('qemu-img', ['bitmap', '--disable', theirs, 'b1']);
  runOk('qemu-img', ['bitmap', '--add', '-g', '512', theirs, 'b2']);
  runOk('qemu-img', ['bitmap', '--add', '-g', '4M', theirs, 'b3']);
  await copyFile(theirs, ours);
  return [ours, theirs];
}

function bitmapList(image: string): unknown {
  const info = JSON.parse(runOk('qemu-img', ['info', '--output=json', image]));
  return info['format-specific'].data.bitmaps;
}

async function sameAsQemu(ours: string, theirs: string): Promise<void> {
  assert.deepEqual(bitmapList(ours), bitmapList(theirs));
  const check = run('qemu-img', ['check', ours]);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  assert.equal(run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ours, theirs]).status, 0);
  for (const name of BITMAPS) {
    assert.deepEqual(await qemuDirtyMap(ours, name), await qemuDirtyMap(theirs, name), `bitmap ${name}`);
  }
}

const ROUND_ONE = [
  'write -P 0xab 100k 10k',
  'write -P 0xcd 3M 1',
  'write -z 5M 4097',
  'write -z -u 8M 128k',
  'discard 10M 64k',
  'write -P 0xef 63M 1M',
];
const ROUND_TWO = ['write -P 0x01 20M 512', 'write -P 0x02 100k 4k', 'discard 30000 100000'];

async function ioBoth(ours: string, theirs: string, commands: string[]): Promise<void> {
  const args = commands.flatMap((c) => ['-c', c]);
  const r = await vdisk(['io', '-f', 'qcow2', ...args, ours]);
  assert.equal(r.code, 0, r.stderr);
  runOk('qemu-io', ['-f', 'qcow2', ...args, theirs]);
}

/** Starts an interactive io session, sends one command, waits for its report, then kills it. */
async function killAfter(cmd: string, args: string[], command: string): Promise<void> {
  const child: ChildProcess = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const reported = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('wrote')) resolve();
    });
    child.on('exit', () => reject(new Error(`${cmd} exited before the kill: ${out} ${err}`)));
  });
  child.stdin!.write(`${command}\n`);
  await reported;
  const gone = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGKILL');
  await gone;
}

describe('qcow2 persistent dirty bitmaps against QEMU', { skip }, () => {
  it('writes through vdisk io keep every bitmap as qemu-io does', async () => {
    await withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir);
      await ioBoth(ours, theirs, ROUND_ONE);
      await sameAsQemu(ours, theirs);
      assert.deepEqual(dirtyRanges(await qemuDirtyMap(ours, 'b2')), [
        [100 * 1024, 10240],
        [3 * 1024 * 1024, 512],
        [5 * 1024 * 1024, 4608],
        [8 * 1024 * 1024, 128 * 1024],
        [10 * 1024 * 1024, 65536],
        [63 * 1024 * 1024, 1024 * 1024],
      ]);
      assert.deepEqual(dirtyRanges(await qemuDirtyMap(ours, 'b1')), [], 'a disabled bitmap changed');
      // A second session loads the stored bits and adds to them.
      await ioBoth(ours, theirs, ROUND_TWO);
      await sameAsQemu(ours, theirs);
    });
  });

  it('with 4 KiB clusters and 512-byte granularity, bitmaps spanning several data clusters', async () => {
    await withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir, '300M', 'cluster_size=4096');
      // At 512 bytes per bit, one 4 KiB cluster of bitmap covers 16 MiB: these land in several.
      await ioBoth(ours, theirs, ['write -P 1 0 1k', 'write -P 2 17M 4k', 'write -P 3 299M 1M', 'discard 40M 8M']);
      await sameAsQemu(ours, theirs);
      await ioBoth(ours, theirs, ['write -P 4 16M 2M']);
      await sameAsQemu(ours, theirs);
    });
  });

  it('resize keeps the bitmaps as qemu-img resize does, and is refused with an inconsistent one', async () => {
    await withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir);
      await ioBoth(ours, theirs, ROUND_ONE);
      for (const args of [['+100M'], ['--shrink', '5243392'], ['+3M']]) {
        const r = await vdisk(['resize', ours, ...args]);
        assert.equal(r.code, 0, r.stderr);
        runOk('qemu-img', ['resize', theirs, ...args]);
        await ioBoth(ours, theirs, ['write -P 9 5238784 4k']);
        await sameAsQemu(ours, theirs);
      }
      await killAfter(process.execPath, [VDISK_MAIN, 'io', '-f', 'qcow2', ours], 'write 0 4k');
      const before = await readFile(ours);
      const r = await vdisk(['resize', ours, '+1M']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^vdisk: Bitmap 'b0' is inconsistent and cannot be used[^\n]*\n$/);
      assert.ok(before.equals(await readFile(ours)));
    });
  });

  it('a read-only open and a writable open without writes leave the image as it was', async () => {
    await withTempDir(async (dir) => {
      const [ours] = await twins(dir);
      const before = await readFile(ours);
      assert.equal((await vdisk(['io', '-r', '-f', 'qcow2', '-c', 'read 0 64k', ours])).code, 0);
      assert.equal((await vdisk(['io', '-f', 'qcow2', '-c', 'read 0 64k', ours])).code, 0);
      assert.equal((await vdisk(['info', ours])).code, 0);
      assert.ok(before.equals(await readFile(ours)));
    });
  });

  it('a kill mid-session leaves the bitmaps in use as QEMU does, and the image otherwise sound', async () => {
    await withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir);
      await killAfter(process.execPath, [VDISK_MAIN, 'io', '-f', 'qcow2', ours], 'write -P 0x5a 2M 64k');
      await killAfter('qemu-io', ['-f', 'qcow2', theirs], 'write -P 0x5a 2M 64k');
      const list = bitmapList(ours) as { flags: string[] }[];
      assert.ok(list.every((b) => b.flags.includes('in-use')));
      const info = await vdisk(['info', ours]);
      assert.equal(info.stdout, runOk('qemu-img', ['info', ours]));
      assert.deepEqual(list, bitmapList(theirs));
      for (const image of [ours, theirs]) {
        const check = run('qemu-img', ['check', image]);
        assert.equal(check.status, 0, check.stdout + check.stderr);
      }
      assert.equal(run('qemu-io', ['-r', '-c', 'read -P 0x5a 2M 64k', ours]).status, 0);
      assert.equal(run('qemu-img', ['compare', ours, theirs]).status, 0);
      // An inconsistent bitmap is left alone by later writes and by check -r, as QEMU leaves it.
      await ioBoth(ours, theirs, ['write -P 0x66 4M 4k']);
      assert.equal((await vdisk(['check', '-r', 'all', ours])).code, 0);
      runOk('qemu-img', ['check', '-r', 'all', theirs]);
      assert.deepEqual(bitmapList(ours), bitmapList(theirs));
      const inUse = await qemuDirtyMap(ours, 'b0').catch((err: Error) => err.message);
      assert.match(String(inUse), /inconsistent/);
      // Next to inconsistent bitmaps: a new one goes last, a removed one goes, the others keep
      // their places, and only the new one is tracked.
      for (const args of [
        ['--add', 'new'],
        ['--remove', 'b1'],
        ['--remove', 'b2'],
        ['--add', 'b2'],
      ]) {
        const name = args[1]!;
        assert.equal((await vdisk(['bitmap', args[0]!, ours, name])).code, 0);
        runOk('qemu-img', ['bitmap', args[0]!, theirs, name]);
      }
      await ioBoth(ours, theirs, ['write -P 0x67 8M 4k']);
      assert.deepEqual(bitmapList(ours), bitmapList(theirs));
      for (const name of ['new', 'b2']) {
        assert.deepEqual(await qemuDirtyMap(ours, name), await qemuDirtyMap(theirs, name));
      }
      assert.equal(run('qemu-img', ['check', ours]).status, 0);
    });
  });

  it('a directory QEMU refuses makes vdisk refuse to open the image, and changes nothing', async () => {
    await withTempDir(async (dir) => {
      const [ours] = await twins(dir);
      const bytes = await readFile(ours);
      // The reserved flags of the first directory entry.
      const ext = bytes.indexOf(Buffer.from([0x23, 0x85, 0x28, 0x75]));
      const dirOffset = Number(bytes.readBigUInt64BE(ext + 8 + 16));
      bytes.writeUInt32BE(0x80000002, dirOffset + 12);
      await writeFile(ours, bytes);
      const qemu = run('qemu-img', ['info', ours]);
      for (const args of [
        ['info', ours],
        ['io', '-f', 'qcow2', '-c', 'write 0 4k', ours],
      ]) {
        const r = await vdisk(args);
        assert.equal(r.code, qemu.status);
        assert.match(r.stderr, /^vdisk: .*Bitmap 'b0' doesn't satisfy the constraints\n$/);
      }
      assert.ok(bytes.equals(await readFile(ours)));
    });
  });
});
