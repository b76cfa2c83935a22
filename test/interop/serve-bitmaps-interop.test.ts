/**
 * vdisk serve -B against qemu-nbd -B: the same image gives the same qemu:dirty-bitmap:NAME maps
 * through nbdinfo, listed as qemu-nbd lists them; on a writable export a client's writes show in
 * the map at once and are stored in the image when the server stops; qemu-nbd's refusals (an
 * unknown or inconsistent bitmap) are vdisk's.
 */
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { dirtyRanges, nbdMap, qemuDirtyMap } from '../helpers/dirty-map.js';
import { startVdiskServe } from '../helpers/nbd-serve.js';
import { hasCommand, run as runAsync, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { run, runOk } from '../helpers/tools.js';

const TOOLS = ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'];
const missing = TOOLS.filter((t) => !hasCommand(t));
if (missing.length > 0) console.error(`SKIPPED: ${missing.join(', ')} not installed; serve -B tests do not run`);
const skip = missing.length > 0 && `not installed: ${missing.join(', ')}`;

function makeImage(dir: string): string {
  const image = join(dir, 'img.qcow2');
  runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
  runOk('qemu-img', ['bitmap', '--add', image, 'b0']);
  runOk('qemu-img', ['bitmap', '--add', '-g', '512', image, 'b1']);
  runOk('qemu-io', ['-c', 'write 1M 4k', '-c', 'write -z 9M 100k', '-c', 'discard 20000 70000', image]);
  runOk('qemu-img', ['bitmap', '--disable', image, 'b1']);
  runOk('qemu-io', ['-c', 'write 40M 1k', image]);
  return image;
}

function contexts(listing: string): string[] {
  return listing
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^(base|qemu):/.test(l));
}

describe('vdisk serve -B against qemu-nbd -B', { skip }, () => {
  it('exports the same dirty maps, listed in the same order', async () => {
    await withTempDir(async (dir) => {
      const image = makeImage(dir);
      const server = await startVdiskServe([
        '-r',
        '-t',
        '-f',
        'qcow2',
        '-B',
        'b0',
        '-B',
        'b1',
        '-k',
        join(dir, 's'),
        image,
      ]);
      try {
        for (const name of ['b0', 'b1']) {
          assert.deepEqual(await nbdMap(server.uri, `qemu:dirty-bitmap:${name}`), await qemuDirtyMap(image, name));
        }
        const ours = await runAsync('nbdinfo', ['--list', server.uri]);
        const theirs = run('nbdinfo', [
          '--list',
          '--',
          '[',
          'qemu-nbd',
          '-r',
          '-f',
          'qcow2',
          '-B',
          'b0',
          '-B',
          'b1',
          image,
          ']',
        ]);
        assert.deepEqual(contexts(ours.stdout), contexts(theirs.stdout));
        assert.deepEqual(contexts(ours.stdout), ['base:allocation', 'qemu:dirty-bitmap:b1', 'qemu:dirty-bitmap:b0']);
      } finally {
        await server.stop();
      }
    });
  });

  it("a writable export's map follows the client's writes, and they are stored on exit", async () => {
    await withTempDir(async (dir) => {
      const image = makeImage(dir);
      const twin = join(dir, 'twin.qcow2');
      await copyFile(image, twin);
      const server = await startVdiskServe(['-t', '-f', 'qcow2', '-B', 'b0', '-k', join(dir, 's'), image]);
      try {
        const w = run('qemu-io', ['-f', 'raw', '-c', 'write -P 7 30M 8k', '-c', 'write -z 50M 64k', server.uri]);
        assert.equal(w.status, 0, w.stderr);
        runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 30M 8k', '-c', 'write -z 50M 64k', twin]);
        const live = await nbdMap(server.uri, 'qemu:dirty-bitmap:b0');
        assert.deepEqual(live, await qemuDirtyMap(twin, 'b0'));
        assert.ok(dirtyRanges(live).some(([o]) => o === 30 * 1024 * 1024));
      } finally {
        assert.equal(await server.stop(), 0);
      }
      assert.deepEqual(
        JSON.parse(runOk('qemu-img', ['info', '--output=json', image]))['format-specific'].data.bitmaps,
        JSON.parse(runOk('qemu-img', ['info', '--output=json', twin]))['format-specific'].data.bitmaps,
      );
      for (const name of ['b0', 'b1'])
        assert.deepEqual(await qemuDirtyMap(image, name), await qemuDirtyMap(twin, name));
      assert.equal(run('qemu-img', ['check', image]).status, 0);
    });
  });

  it('refuses unknown and inconsistent bitmaps as qemu-nbd does', async () => {
    await withTempDir(async (dir) => {
      const image = makeImage(dir);
      const r = await vdisk(['serve', '-r', '-f', 'qcow2', '-B', 'nope', '-k', join(dir, 's'), image]);
      const q = run('qemu-nbd', ['-r', '-f', 'qcow2', '-B', 'nope', '-k', join(dir, 'q'), image]);
      assert.equal(r.code, q.status);
      assert.equal(r.stderr, q.stderr.replace(/^qemu-nbd: /, 'vdisk: '));
    });
  });
});
