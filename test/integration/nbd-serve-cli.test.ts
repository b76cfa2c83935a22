/**
 * `vdisk serve` as a user runs it: what it prints, how it refuses bad arguments (one line, exit
 * status 1), how it stops on SIGINT/SIGTERM, and QEMU's protection of probed raw images.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CMD, NBD_ERR } from '../../src/nbd-wire/protocol.js';
import { RawClient } from '../helpers/nbd-client.js';
import { startVdiskServe } from '../helpers/nbd-serve.js';
import { vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

describe('vdisk serve command line', () => {
  it('refuses bad arguments with one line and status 1', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'a.img');
      await writeFile(image, Buffer.alloc(MiB));
      const notSocket = path.join(dir, 'plain-file');
      await writeFile(notSocket, 'x');
      const cases: Array<[string[], RegExp]> = [
        [[], /Expecting one image file name/],
        [
          ['-f', 'raw', '--detect-zeroes=unmap', image],
          /detect-zeroes to unmap is not allowed without setting --discard=unmap/,
        ],
        [['-f', 'raw', '--discard=sometimes', image], /Invalid discard option: sometimes/],
        [['-f', 'raw', '-p', '70000', image], /Invalid port: '70000'/],
        [['-f', 'raw', '-e', '-1', image], /Invalid shared device number|Expecting one image file name/],
        [['-f', 'raw', '--bogus', image], /unrecognized option '--bogus'/],
        [['-f', 'raw', '-U', image], /--force-share \(-U\) needs --read-only/],
        [['-f', 'raw', path.join(dir, 'missing.img')], /Could not open .*missing\.img.*No such file or directory/],
        [['-f', 'raw', '-k', notSocket, image], /the file exists and is not a socket/],
        [['-f', 'raw', '--tls-creds', path.join(dir, 'nowhere'), image], /Unable to access credentials .*ca-cert\.pem/],
      ];
      for (const [args, message] of cases) {
        const r = await vdisk(['serve', ...args]);
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, message);
        assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      }
    });
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`prints its URI and stops cleanly on ${signal}, removing its socket`, async () => {
      await withTempDir(async (dir) => {
        const image = path.join(dir, 'a.img');
        await writeFile(image, Buffer.alloc(MiB));
        const socket = path.join(dir, 'nbd.sock');
        const s = await startVdiskServe(['-f', 'raw', '-x', 'my disk', '-k', socket, image]);
        assert.equal(s.uri, `nbd+unix:///my%20disk?socket=${socket}`);
        assert.ok(existsSync(socket));
        assert.equal(await s.stop(signal), 0);
        assert.equal(s.output().stderr, '');
        assert.ok(!existsSync(socket));
      });
    });
  }

  it('warns about a probed raw image and refuses writes that would make it look like qcow2', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'a.img');
      await writeFile(image, Buffer.alloc(MiB));
      const s = await startVdiskServe(['-t', '-k', path.join(dir, 's'), image]);
      try {
        assert.match(s.output().stderr, /probing guessed raw/);
        const c = await RawClient.connect({ socket: path.join(dir, 's') });
        await c.handshake();
        const header = Buffer.alloc(512);
        header.write('QFI\xfb', 0, 'latin1');
        assert.equal(await c.write(0, header), NBD_ERR.EPERM);
        assert.equal(await c.write(512, header), 0, 'other sectors are not protected');
        assert.equal(await c.write(0, Buffer.alloc(512, 1)), 0, 'other data in block 0 is fine');
        c.request(CMD.DISC, 9, 0, 0);
        await c.closed;
      } finally {
        assert.equal(await s.stop(), 0);
      }
    });
  });
});
