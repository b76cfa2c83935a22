/**
 * SIGTERM while clients keep writing: the server stops within a couple of seconds, requests
 * that arrive after the signal are answered ESHUTDOWN (as the NBD spec asks) rather than left
 * waiting, and every write acknowledged before the stop reads back afterwards. With several
 * writers that keep more requests coming than a connection may have in flight, the requests
 * waiting behind those limits are answered ESHUTDOWN too, and each connection closes within
 * about a second of the signal.
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

/**
 * Each block of the image holds the pattern of its last acknowledged write, or of a write sent
 * to it later that the server took but stopped before answering.
 */
async function assertAcknowledgedWritesKept(
  socket: string,
  image: string,
  blockSize: number,
  writes: { block: number; cookie: number; acknowledged: boolean }[],
): Promise<void> {
  const server = await startVdiskServe(['-f', 'qcow2', '-r', '-k', socket, image]);
  const reader = await RawClient.connect({ socket });
  await reader.handshake({ structured: true });
  const byBlock = new Map<number, { cookie: number; acknowledged: boolean }[]>();
  for (const w of writes) {
    const list = byBlock.get(w.block) ?? [];
    list.push(w);
    byBlock.set(w.block, list);
  }
  for (const [block, list] of byBlock) {
    let lastAck = list.length - 1;
    while (lastAck >= 0 && !list[lastAck]!.acknowledged) lastAck--;
    if (lastAck < 0) continue;
    const data = await reader.read(block * blockSize, blockSize);
    const allowed = list.slice(lastAck).map((w) => w.cookie & 0xff);
    assert.ok(
      allowed.some((x) => data[0] === x && data.equals(Buffer.alloc(blockSize, x))),
      `block ${block} lost write ${list[lastAck]!.cookie}`,
    );
  }
  reader.close();
  await server.stop();
}

describe('stopping a busy server', () => {
  it('answers late requests ESHUTDOWN, stops promptly, keeps what it acknowledged', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await createImage({ filename: image, format: 'qcow2', size: 256 * 1024 * 1024 });
      const socket = path.join(dir, 's.sock');
      const server = await startVdiskServe(['-f', 'qcow2', '-k', socket, image]);
      const client = await RawClient.connect({ socket });
      await client.handshake({ structured: false });
      const writes: { block: number; cookie: number; acknowledged: boolean }[] = [];
      const errors = new Map<number, number>();
      let cookie = 0;
      let stopping = false;
      const send = () => {
        cookie++;
        const block = cookie % 4096;
        writes.push({ block, cookie, acknowledged: false });
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
          if (error === 0) writes[r.cookie - 1]!.acknowledged = true;
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
      const acknowledged = writes.filter((w) => w.acknowledged).length;
      assert.ok(acknowledged > 16, `only ${acknowledged} writes acknowledged before the stop`);
      await assertAcknowledgedWritesKept(socket, image, BLOCK, writes);
    });
  });

  it('several writers with requests waiting behind the in-flight limits: all answered, each connection closed within about a second', async (t) => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await createImage({ filename: image, format: 'qcow2', size: 256 * 1024 * 1024 });
      const socket = path.join(dir, 's.sock');
      const server = await startVdiskServe(['-f', 'qcow2', '-e', '0', '-k', socket, image]);
      // 128 KiB writes, 320 kept coming per client: more than the 256 a connection may have in
      // flight, so some always wait, complete, in the server's input when the signal comes.
      const size = 128 * 1024;
      const pipeline = 320;
      const patterns = new Map<number, Buffer>();
      const pattern = (x: number) => patterns.get(x) ?? patterns.set(x, Buffer.alloc(size, x)).get(x)!;
      let signalled = 0;
      const writers = await Promise.all(
        [0, 1].map(async (k) => {
          const client = await RawClient.connect({ socket });
          await client.handshake({ structured: false });
          const writes = new Map<number, { block: number; cookie: number; acknowledged: boolean }>();
          const errors = new Map<number, number>();
          let next = 0;
          let closedAfter = -1;
          const send = () => {
            const cookie = k * 1_000_000 + ++next;
            // Each client writes its own 512 blocks (64 MiB) in turn: more than it has in flight, so
            // two writes to one block are never in flight together (their order would be unspecified).
            const block = k * 512 + (next % 512);
            writes.set(cookie, { block, cookie, acknowledged: false });
            client.request(CMD.WRITE, cookie, block * size, size, 0, pattern(cookie & 0xff));
          };
          for (let i = 0; i < pipeline; i++) send();
          const done = (async () => {
            for (;;) {
              let r: Awaited<ReturnType<RawClient['anyReply']>>;
              try {
                r = await client.anyReply();
              } catch {
                break;
              }
              assert.ok(writes.has(r.cookie), `a reply to cookie ${r.cookie}, never sent`);
              const error = replyError(r);
              if (error === 0) writes.get(r.cookie)!.acknowledged = true;
              else errors.set(error, (errors.get(error) ?? 0) + 1);
              if (!client.socket.destroyed) send();
            }
            await client.closed;
            closedAfter = Date.now() - signalled;
          })();
          return { client, writes, errors, done, closedAfter: () => closedAfter };
        }),
      );
      await new Promise((r) => setTimeout(r, 400));
      signalled = Date.now();
      const code = await server.stop('SIGTERM');
      const exitedAfter = Date.now() - signalled;
      await Promise.all(writers.map((w) => w.done));
      assert.equal(code, 0, server.output().stderr);
      assert.ok(exitedAfter < 3000, `the server took ${exitedAfter} ms to exit`);
      t.diagnostic(
        `exit ${exitedAfter} ms after SIGTERM; ` +
          writers
            .map(
              (w, k) =>
                `client ${k}: ${[...w.writes.values()].filter((x) => x.acknowledged).length} acknowledged, ` +
                `${w.errors.get(ESHUTDOWN) ?? 0} ESHUTDOWN, closed after ${w.closedAfter()} ms`,
            )
            .join('; '),
      );
      for (const [k, w] of writers.entries()) {
        const acknowledged = [...w.writes.values()].filter((x) => x.acknowledged).length;
        assert.ok(acknowledged > 16, `client ${k}: only ${acknowledged} writes acknowledged before the stop`);
        assert.ok((w.errors.get(ESHUTDOWN) ?? 0) > 0, `client ${k}: no ESHUTDOWN (${JSON.stringify([...w.errors])})`);
        assert.deepEqual(
          [...w.errors.keys()].filter((e) => e !== ESHUTDOWN),
          [],
          `client ${k}: only ESHUTDOWN errors`,
        );
        assert.ok(
          w.closedAfter() >= 0 && w.closedAfter() < 1500,
          `client ${k}: closed ${w.closedAfter()} ms after the signal`,
        );
        w.client.close();
      }
      await assertAcknowledgedWritesKept(
        socket,
        image,
        size,
        writers.flatMap((w) => [...w.writes.values()]),
      );
    });
  });
});
