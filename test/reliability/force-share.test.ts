/**
 * Force-share (-U) is for readers: while qemu-io holds an image writable, a vdisk command with
 * -U that would write (io without -r, check -r, serve without -r) is refused before it opens
 * anything, and the image is left exactly as qemu-io wrote it; reads with -U still work.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { native } from '../../src/io/native.js';
import { hasCommand, run, vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';

const haveQemu = hasCommand('qemu-img') && hasCommand('qemu-io');

/** Starts qemu-io holding `file` writable, once it has written a pattern; resolves when the lock is held. */
async function holdWritable(file: string): Promise<ChildProcess> {
  const child = spawn('qemu-io', ['-c', 'write -P 0x3c 0 64k', '-c', 'flush', '-c', 'sleep 60000', file], {
    stdio: 'ignore',
  });
  const deadline = Date.now() + 10_000;
  const probe = fs.openSync(file, 'r');
  try {
    // Byte 101 is QEMU's "write" permission lock.
    while (!native().testLock(probe, 101, 1, 'write')) {
      assert.ok(Date.now() < deadline, 'qemu-io did not lock the image');
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    fs.closeSync(probe);
  }
  return child;
}

describe('force-share (-U) never writes past another writer', {
  skip: !haveQemu && 'qemu-img/qemu-io not installed',
}, () => {
  it('io, check -r and serve with -U refuse to write an image qemu-io holds; -U reads work', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'held.qcow2');
      assert.equal((await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '16M'])).code, 0);
      const child = await holdWritable(file);
      try {
        // A -U reader sees qemu-io's pattern once qemu-io has written and flushed it.
        const readArgs = ['io', '-U', '-r', '-f', 'qcow2', '-c', 'read -P 0x3c 0 64k', file];
        const deadline = Date.now() + 10_000;
        for (;;) {
          const read = await vdisk(readArgs);
          if (read.code === 0 && !/Pattern verification failed/.test(read.stdout)) break;
          assert.ok(Date.now() < deadline, `-U read never saw qemu-io's data: ${read.stdout}${read.stderr}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const before = await fileState(file);
        const refused = [
          ['io', '-U', '-f', 'qcow2', '-c', 'write -P 0x41 0 4k', file],
          ['check', '-U', '-r', 'all', file],
          ['check', '-U', '-r', 'leaks', file],
        ];
        for (const args of refused) {
          const r = await vdisk(args);
          assert.equal(r.code, 1, `vdisk ${args.join(' ')}: exit ${r.code}\n${r.stdout}${r.stderr}`);
          assert.match(r.stderr, /force-share \(-U\) can only be used with read-only images/, args.join(' '));
        }
        const serve = await vdisk(['serve', '-U', '-f', 'qcow2', '-k', path.join(dir, 's.sock'), file]);
        assert.notEqual(serve.code, 0);
        assert.match(serve.stderr, /needs --read-only/);
        assert.deepEqual(await fileState(file), before, 'a refused -U command changed the image');

        const info = await vdisk(['info', '-U', file]);
        assert.equal(info.code, 0, info.stderr);
      } finally {
        child.kill('SIGKILL');
      }
    });
  });
});
