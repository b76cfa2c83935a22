/**
 * SIGTERM while a client keeps writing: the server stops within a couple of seconds, requests
 * that arrive after the signal are answered ESHUTDOWN (as the NBD spec asks) rather than left
 * waiting, and every write acknowledged before the stop reads back afterwards.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CMD } from '../../src/nbd-wire/protocol.js';
import { createImage } from '../../src/tools/create.js';
import { RawClient, replyError } from '../helpers/nbd-client.js';
import { startVdiskServe } from '../helpers/nbd-serve.js';
import { withTempDir } from '../helpers/tmp.js';

const ESHUTDOWN = 108;
const BLOCK = 64 * 1024;

describe('stopping a busy server', () => {
  it('answers late requests ESHUTDOWN, stops promptly, keeps what it acknowledged', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await createImage({ filename: image, format: 'qcow2', size: 256 * 1024 * 1024 });
      const socket = path.join(dir, 's.sock');
      const server = await startVdiskServe(['-f', 'qcow2', '-k', socket, image]);
      const client = await RawClient.connect({ socket });
      await client.handshake({ structured: false });
      const acknowledged: number[] = [];
      const errors = new Map<number, number>();
      let cookie = 0;
      let stopping = false;
      const send = () => {
        cookie++;
        const block = cookie % 4096;
        client.request(CMD.WRITE, cookie, block * BLOCK, BLOCK, 0, Buffer.alloc(BLOCK, cookie & 0xff));
      };
      for (let i = 0; i < 16; i++) send();
      const replies = (async () => {
        for (;;) {
          let r: Awaited<ReturnType<RawClient['anyReply']>>;
          try {
            r = await client.anyReply();
          } catch {
            return; // the server closed the connection
          }
          const error = replyError(r);
          if (error === 0) acknowledged.push(r.cookie);
          else errors.set(error, (errors.get(error) ?? 0) + 1);
          if (!client.socket.destroyed) send();
        }
      })();
      await new Promise((r) => setTimeout(r, 300));
      stopping = true;
      const started = Date.now();
      const code = await server.stop('SIGTERM');
      const took = Date.now() - started;
      await replies;
      client.close();
      assert.ok(stopping);
      assert.equal(code, 0, server.output().stderr);
      assert.ok(took < 3000, `the server took ${took} ms to stop`);
      assert.ok((errors.get(ESHUTDOWN) ?? 0) > 0, `no ESHUTDOWN reply (errors: ${JSON.stringify([...errors])})`);
      assert.deepEqual(
        [...errors.keys()].filter((e) => e !== ESHUTDOWN),
        [],
        'only ESHUTDOWN errors',
      );
      assert.ok(acknowledged.length > 16, `only ${acknowledged.length} writes acknowledged before the stop`);

      // Each block holds the pattern of its last acknowledged write, or of a later write the
      // server took but stopped before answering.
      const again = await startVdiskServe(['-f', 'qcow2', '-r', '-k', socket, image]);
      const reader = await RawClient.connect({ socket });
      await reader.handshake({ structured: true });
      const last = new Map<number, number>();
      for (const c of acknowledged) last.set(c % 4096, Math.max(last.get(c % 4096) ?? 0, c));
      for (const [block, c] of last) {
        const data = await reader.read(block * BLOCK, BLOCK);
        const allowed = [c];
        for (let later = c + 4096; later <= cookie; later += 4096) allowed.push(later);
        assert.ok(
          allowed.some((x) => data.equals(Buffer.alloc(BLOCK, x & 0xff))),
          `block ${block} lost write ${c}`,
        );
      }
      reader.close();
      await again.stop();
    });
  });
});
