/**
 * The NBD client's settings on the command line (--open-timeout, --request-timeout,
 * --reconnect-delay, --connections) against nbdkit: its delay filter for a server that is slow
 * to answer or to open, a server killed in the middle of a request and started again, and its
 * log filter to count connections. Data is checked with qemu-io.
 */
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startNbdkit } from '../helpers/nbd-serve.js';
import { lines, needTools as need, runOk, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const io = (commands: string[]) => commands.flatMap((c) => ['-c', c]);

function verified(out: string): void {
  assert.doesNotMatch(out, /Pattern verification failed|error|failed/i, out);
}

async function until(condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function timed<T>(fn: () => Promise<T>): Promise<{ result: T; seconds: number }> {
  const start = Date.now();
  const result = await fn();
  return { result, seconds: (Date.now() - start) / 1000 };
}

describe('the NBD client settings on the command line', () => {
  it('--request-timeout fails a read the server does not answer, in that time', async (t) => {
    if (!need(t, 'nbdkit')) return;
    await withTempDir(async (dir) => {
      const slow = await startNbdkit(['--filter=delay', 'memory', '1M', 'delay-read=30'], path.join(dir, 'd'));
      try {
        const { result: r, seconds } = await timed(() =>
          vdisk(['io', '-f', 'raw', '--request-timeout', '0.5', ...io(['read 0 4k']), slow.uri]),
        );
        assert.equal(r.code, 1, r.stdout + r.stderr);
        assert.match(r.stdout + r.stderr, /read failed: .*did not answer for 0\.5 s/);
        assert.ok(seconds < 10, `took ${seconds} s`);
      } finally {
        await slow.stop();
      }
    });
  });

  it('--open-timeout gives up on a server that does not finish the handshake', async (t) => {
    if (!need(t, 'nbdkit')) return;
    await withTempDir(async (dir) => {
      const slow = await startNbdkit(['--filter=delay', 'memory', '1M', 'delay-open=30'], path.join(dir, 'o'));
      try {
        const { result: r, seconds } = await timed(() => vdisk(['info', '--open-timeout', '0.5', slow.uri]));
        assert.equal(r.code, 1);
        assert.deepEqual(lines(r.stderr), [`vdisk: Could not open '${slow.uri}': No connection within 0.5 s`]);
        assert.ok(seconds < 10, `took ${seconds} s`);
      } finally {
        await slow.stop();
      }
    });
  });

  it('--reconnect-delay carries a request over a server restarted under it', async (t) => {
    if (!need(t, 'nbdkit', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const disk = path.join(dir, 'disk.raw');
      await runOk('qemu-img', ['create', '-q', '-f', 'raw', disk, '4M']);
      await runOk('qemu-io', ['-f', 'raw', ...io(['write -P 0x5c 0 1M']), disk]);
      const socket = path.join(dir, 'k');
      const killedUnder = async (args: string[]) => {
        const log = path.join(dir, 'log');
        await writeFile(log, '');
        const filters = ['--filter=log', '--filter=delay'];
        await rm(socket, { force: true }); // nbdkit leaves its socket behind when it stops
        const first = await startNbdkit([...filters, 'file', disk, 'delay-read=2', `logfile=${log}`], socket);
        const commands = io(['read -P 0x5c 0 1M', 'write -P 0x6d 1M 64k']);
        const client = vdisk(['io', '-f', 'raw', ...args, ...commands, first.uri]);
        // Killed once the read has reached it (the delay filter holds it there).
        await until(async () => / Read id=/.test(await readFile(log, 'utf8')));
        await first.stop('SIGKILL');
        await rm(socket, { force: true });
        const second = await startNbdkit(['file', disk], socket);
        try {
          return await client;
        } finally {
          await second.stop();
        }
      };
      const without = await killedUnder([]);
      assert.equal(without.code, 1);
      assert.match(without.stdout + without.stderr, /read failed: .*closed the connection/);
      const withDelay = await killedUnder(['--reconnect-delay', '20']);
      assert.equal(withDelay.code, 0, withDelay.stdout + withDelay.stderr);
      verified(withDelay.stdout);
      verified(await runOk('qemu-io', ['-f', 'raw', ...io(['read -P 0x5c 0 1M', 'read -P 0x6d 1M 64k']), disk]));
    });
  });

  it('--connections opens that many when the server allows multi-conn, and the writes all land', async (t) => {
    if (!need(t, 'nbdkit', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const log = path.join(dir, 'log');
      await writeFile(log, '');
      const server = await startNbdkit(['--filter=log', 'memory', '16M', `logfile=${log}`], path.join(dir, 'k'));
      try {
        const writes = Array.from({ length: 8 }, (_, i) => `write -P 0x${(0x20 + i).toString(16)} ${i}M 1M`);
        verified(
          (await vdisk(['io', '-f', 'raw', '--connections', '4', ...io([...writes, 'flush']), server.uri])).stdout,
        );
        const connects = (await readFile(log, 'utf8')).split('\n').filter((l) => / Connect /.test(l));
        assert.equal(connects.length, 4);
        const reads = writes.map((w) => w.replace('write', 'read'));
        verified(await runOk('qemu-io', ['-f', 'raw', ...io(reads), server.uri]));
      } finally {
        await server.stop();
      }
    });
  });
});
