/**
 * vdisk's NBD client against the servers people run — qemu-nbd and nbdkit (memory plugin, with
 * its error and delay filters); TLS against vdisk serve is in nbd-clients.test.ts — with QEMU's
 * and libnbd's tools as the oracles: what
 * vdisk writes through an export qemu-io and nbdcopy read back, and the other way round; `vdisk
 * map` and `info` of an export print what qemu-img prints for the same URI; a convert from an
 * export passes qemu-img check and compares equal; a qcow2 overlay on an nbd:// base is the one
 * qemu-img makes and reads identically. Each test skips, saying why, when a tool is missing.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { openImage } from '../../src/engine/open.js';
import { NbdDriver } from '../../src/remote/nbd/nbd-driver.js';
import { type ServerProcess, startNbdkit, startQemuNbd, startVdiskServe } from '../helpers/nbd-serve.js';
import { needTools as need, runOk, vdisk, vdiskOk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

async function stopping<T>(server: ServerProcess, fn: (s: ServerProcess) => Promise<T>): Promise<T> {
  try {
    return await fn(server);
  } finally {
    await server.stop('SIGTERM');
  }
}

/** qemu-io commands and the pattern checks that must hold after them. */
const WRITES = [
  'write -P 0xab 0 64k',
  'write -P 0xcd 1000 3000',
  'write -P 0x11 1M 1M',
  'write -z 1536k 128k',
  'write -P 0x33 7M 512',
];
const READS = [
  'read -P 0xab 0 1000',
  'read -P 0xcd 1000 3000',
  'read -P 0x11 1M 512k',
  'read -P 0 1536k 128k',
  'read -P 0x11 1664k 384k',
  'read -P 0x33 7M 512',
];

function io(commands: string[]): string[] {
  return commands.flatMap((c) => ['-c', c]);
}

function verified(out: string): void {
  assert.doesNotMatch(out, /Pattern verification failed|error|failed/i, out);
}

describe('the NBD client against qemu-nbd', () => {
  it('writes what qemu-io reads back, reads what qemu-io wrote, and maps, describes and converts the export as qemu-img', async (t) => {
    if (!need(t, 'qemu-nbd', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
      await runOk('qemu-io', ['-f', 'qcow2', ...io(['write -P 0x77 8M 256k', 'write -z 12M 64k']), image]);
      const server = await startQemuNbd(['-f', 'qcow2', '-t', '-e', '0', image], { socket: path.join(dir, 's') });
      await stopping(server, async ({ uri }) => {
        verified(await vdiskOk(['io', '-f', 'raw', ...io([...WRITES, 'read -P 0x77 8M 256k']), uri]));
        verified(await runOk('qemu-io', ['-f', 'raw', ...io(READS), uri]));
        for (const output of ['json', 'human']) {
          assert.equal(
            await vdiskOk(['map', `--output=${output}`, uri]),
            await runOk('qemu-img', ['map', `--output=${output}`, uri]),
          );
          assert.equal(
            await vdiskOk(['info', `--output=${output}`, uri]),
            await runOk('qemu-img', ['info', `--output=${output}`, uri]),
          );
        }
        const copy = path.join(dir, 'copy.qcow2');
        await vdiskOk(['convert', '-f', 'raw', '-O', 'qcow2', uri, copy]);
        await runOk('qemu-img', ['check', '-q', copy]);
        await runOk('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', copy, uri]);
        assert.equal(await vdiskOk(['compare', '-f', 'qcow2', '-F', 'raw', copy, uri]), 'Images are identical.\n');
      });
      await runOk('qemu-img', ['check', '-q', image]);
      verified(await runOk('qemu-io', ['-f', 'qcow2', ...io(READS), image]));
    });
  });

  it('spreads requests over several connections when qemu-nbd allows several clients', async (t) => {
    if (!need(t, 'qemu-nbd', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.raw');
      await runOk('qemu-img', ['create', '-q', '-f', 'raw', image, '16M']);
      const server = await startQemuNbd(['-f', 'raw', '-t', '-e', '4', image], { socket: path.join(dir, 's') });
      await stopping(server, async ({ uri }) => {
        const driver = await NbdDriver.open(uri, { connections: 4 });
        assert.equal(driver.connections, 4);
        const pieces = Array.from({ length: 16 }, (_, i) => driver.write(i * MiB, Buffer.alloc(MiB, 0x10 + i)));
        await Promise.all(pieces);
        await driver.flush();
        await driver.close();
      });
      const checks = Array.from({ length: 16 }, (_, i) => `read -P 0x${(0x10 + i).toString(16)} ${i}M 1M`);
      verified(await runOk('qemu-io', ['-f', 'raw', ...io(checks), image]));
    });
  });

  it('converts into an export: zero runs are zeroed, not skipped', async (t) => {
    if (!need(t, 'qemu-nbd', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const source = path.join(dir, 'source.qcow2');
      await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', source, '8M']);
      await runOk('qemu-io', ['-f', 'qcow2', ...io(WRITES), source]);
      const target = path.join(dir, 'target.raw');
      await runOk('qemu-img', ['create', '-q', '-f', 'raw', target, '8M']);
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xee 0 8M', target]);
      const server = await startQemuNbd(['-f', 'raw', '-t', target], { socket: path.join(dir, 's') });
      await stopping(server, ({ uri }) => vdiskOk(['convert', '-O', 'raw', source, uri]));
      await runOk('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', source, target]);
    });
  });

  it('stacks a qcow2 overlay on an nbd:// base that qemu-img makes alike, checks and reads identically', async (t) => {
    if (!need(t, 'qemu-nbd', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const base = path.join(dir, 'base.raw');
      await runOk('qemu-img', ['create', '-q', '-f', 'raw', base, '8M']);
      await runOk('qemu-io', ['-f', 'raw', ...io(WRITES), base]);
      const server = await startQemuNbd(['-f', 'raw', '-r', '-t', '-e', '0', base], { socket: path.join(dir, 's') });
      await stopping(server, async ({ uri }) => {
        const ours = path.join(dir, 'ours.qcow2');
        const theirs = path.join(dir, 'theirs.qcow2');
        await vdiskOk(['create', '-q', '-f', 'qcow2', '-b', uri, '-F', 'raw', ours]);
        await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', uri, '-F', 'raw', theirs]);
        assert.deepEqual(await readFile(ours), await readFile(theirs));
        verified(await vdiskOk(['io', '-f', 'qcow2', ...io(['write -P 0x5e 2M 64k', ...READS.slice(0, 3)]), ours]));
        await runOk('qemu-img', ['check', '-q', ours]);
        verified(
          await runOk('qemu-io', ['-f', 'qcow2', '-r', ...io(['read -P 0x5e 2M 64k', ...READS.slice(0, 3)]), ours]),
        );
        assert.equal(
          await vdiskOk(['map', '--output=json', ours]),
          await runOk('qemu-img', ['map', '--output=json', ours]),
        );
        assert.equal(
          await vdiskOk(['info', '--backing-chain', ours]),
          await runOk('qemu-img', ['info', '--backing-chain', '-U', ours]),
        );
        // Served by vdisk, the overlay (with its remote base) reads as qemu-img reads the file.
        const served = await startVdiskServe(['-f', 'qcow2', '-r', '-t', '-e', '0', '-k', path.join(dir, 'v'), ours]);
        await stopping(served, async (s) => {
          await runOk('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'qcow2', s.uri, ours]);
        });
      });
    });
  });
});

describe('the NBD client against nbdkit', () => {
  it('writes what nbdcopy reads, and maps the export as qemu-img does', async (t) => {
    if (!need(t, 'nbdkit', 'nbdcopy', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const server = await startNbdkit(['memory', '8M'], path.join(dir, 'k'));
      await stopping(server, async ({ uri }) => {
        verified(await vdiskOk(['io', '-f', 'raw', ...io([...WRITES, ...READS]), uri]));
        const out = path.join(dir, 'out.raw');
        await runOk('nbdcopy', [uri, out]);
        const bytes = await readFile(out);
        assert.deepEqual(bytes.subarray(0, 1000), Buffer.alloc(1000, 0xab));
        assert.deepEqual(bytes.subarray(1000, 4000), Buffer.alloc(3000, 0xcd));
        assert.deepEqual(bytes.subarray(MiB + 512 * 1024, MiB + 640 * 1024), Buffer.alloc(128 * 1024));
        assert.deepEqual(bytes.subarray(7 * MiB, 7 * MiB + 512), Buffer.alloc(512, 0x33));
        assert.equal(
          await vdiskOk(['map', '--output=json', uri]),
          await runOk('qemu-img', ['map', '--output=json', uri]),
        );
        // And the other way: what nbdcopy writes into the export, vdisk reads as the file it came from.
        const source = path.join(dir, 'source.raw');
        await runOk('qemu-img', ['create', '-q', '-f', 'raw', source, '8M']);
        await runOk('qemu-io', ['-f', 'raw', ...io(['write -P 0x2c 0 3M', 'write -P 0x4d 5M 1M']), source]);
        await runOk('nbdcopy', [source, uri]);
        assert.equal(await vdiskOk(['compare', '-f', 'raw', '-F', 'raw', source, uri]), 'Images are identical.\n');
      });
    });
  });

  it('fails requests clearly when the server fails them, and times out when it stalls', async (t) => {
    if (!need(t, 'nbdkit')) return;
    await withTempDir(async (dir) => {
      const failing = await startNbdkit(
        ['--filter=error', 'memory', '1M', 'error=EIO', 'error-rate=100%'],
        path.join(dir, 'e'),
      );
      await stopping(failing, async ({ uri }) => {
        const r = await vdisk(['io', '-f', 'raw', '-c', 'read 0 4k', uri]);
        assert.match(r.stderr + r.stdout, /Input\/output error/);
      });
      const slow = await startNbdkit(['--filter=delay', 'memory', '1M', 'delay-read=30'], path.join(dir, 'd'));
      await stopping(slow, async ({ uri }) => {
        const image = await openImage(uri, { format: 'raw', readOnly: true, nbd: { timeout: 0.5 } });
        await assert.rejects(
          image.read(0, 4096),
          (err: unknown) => err instanceof VdiskError && err.code === 'ETIMEDOUT',
        );
        await image.close();
      });
    });
  });
});
