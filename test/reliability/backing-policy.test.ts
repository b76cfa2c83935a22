/**
 * Backing files from hostile hands: a FIFO (or any file that is neither regular nor a block
 * device) is refused at once by every command instead of hanging it; serving with
 * --confine-backing refuses backing files outside the directory given (an image naming
 * /etc/shadow) and keeps those inside working; a socket in a directory that does not exist is
 * reported as such.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { isVdiskError, openImage } from '../../src/index.js';
import { hasCommand, run, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const haveQemu = hasCommand('qemu-img');

describe('backing files from hostile hands', { skip: !haveQemu && 'qemu-img not installed' }, () => {
  it('a FIFO backing file is refused by every command, quickly', async () => {
    await withTempDir(async (dir) => {
      const fifo = path.join(dir, 'base.fifo');
      assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
      const overlay = path.join(dir, 'overlay.qcow2');
      assert.equal(
        (await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', fifo, '-F', 'raw', overlay, '1M'])).code,
        0,
      );
      const commands = [
        ['info', '--backing-chain', overlay],
        ['map', overlay],
        ['io', '-c', 'read 0 4k', overlay],
        ['compare', overlay, overlay],
        ['convert', overlay, path.join(dir, 'out.raw')],
        ['serve', '-k', path.join(dir, 's.sock'), overlay],
      ];
      for (const args of commands) {
        const started = Date.now();
        const r = await vdisk(args);
        assert.notEqual(r.code, 0, `vdisk ${args[0]} succeeded`);
        assert.match(r.stderr, /not a regular file or block device/, `vdisk ${args[0]}: ${r.stderr}`);
        assert.ok(Date.now() - started < 10_000, `vdisk ${args[0]} took ${Date.now() - started} ms`);
      }
    });
  });

  it('confined backing files: outside refused, inside served', async () => {
    await withTempDir(async (dir) => {
      const secret = path.join(dir, 'secret.raw');
      await writeFile(secret, Buffer.alloc(1 << 20, 0x53));
      const jail = path.join(dir, 'jail');
      await run('mkdir', [jail]);
      const evil = path.join(jail, 'evil.qcow2');
      assert.equal(
        (await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', secret, '-F', 'raw', evil, '1M'])).code,
        0,
      );
      const served = await vdisk(['serve', '--confine-backing', jail, '-k', path.join(dir, 's.sock'), evil]);
      assert.equal(served.code, 1);
      assert.match(served.stderr, /lies outside .*where backing files are confined/);
      await assert.rejects(openImage(evil, { format: 'qcow2', readOnly: true, confineBacking: jail }), (err) => {
        return isVdiskError(err) && err.code === 'EACCES';
      });
      // Parity by default: without confinement the backing file is opened, as qemu-nbd does.
      const open = await openImage(evil, { format: 'qcow2', readOnly: true });
      assert.equal((await open.read(0, 4))[0], 0x53);
      await open.close();

      const base = path.join(jail, 'base.raw');
      await writeFile(base, Buffer.alloc(1 << 20, 0x42));
      const good = path.join(jail, 'good.qcow2');
      assert.equal(
        (await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', good])).code,
        0,
      );
      const inside = await openImage(good, { format: 'qcow2', readOnly: true, confineBacking: jail });
      assert.deepEqual([...(await inside.read(0, 4))], [0x42, 0x42, 0x42, 0x42]);
      await inside.close();
    });
  });

  it('a socket in a missing directory is reported as missing', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'i.raw');
      await writeFile(image, Buffer.alloc(4096));
      const r = await vdisk(['serve', '-f', 'raw', '-k', path.join(dir, 'no', 'such', 'x.sock'), image]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /Could not listen on .*: No such file or directory/);
    });
  });
});
