/**
 * Hostile NBD clients against `vdisk serve` (a separate process, qcow2 image): fuzzed
 * handshakes and requests (lib/nbd-hostile.ts), hundreds of idle, half-open and stalled
 * connections, and clients that never read their replies. Throughout, a well-behaved client
 * keeps reading back its data; the server's memory is read from /proc; at the end the server
 * stops cleanly and `qemu-img check` finds the image consistent.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { CMD, CMD_FLAG, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES } from '../../src/nbd-wire/protocol.js';
import { createImage } from '../../src/tools/create.js';
import { RawClient, replyError } from '../helpers/nbd-client.js';
import { type ServerProcess, startVdiskServe } from '../helpers/nbd-serve.js';
import { hasCommand, run } from '../helpers/run.js';
import { config, LEVEL } from './lib/config.js';
import {
  awaitReplies,
  checkOptionReplies,
  checkTransmissionReplies,
  encodeHostileOption,
  encodeHostileRequest,
  type HostileRequest,
  hostileHandshake,
  hostileRequests,
  processMemory,
  settle,
} from './lib/nbd-hostile.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** The well-behaved client's data; fuzzed writes are kept out of it. */
const KEEP = { offset: 15 * MiB, length: 64 * 1024 };
const MAX_CONNECTIONS = 100;
const HANDSHAKE_LIMIT_S = 2;

describe(`hostile NBD clients (${LEVEL})`, () => {
  let dir: string;
  let image: string;
  let socket: string;
  let server: ServerProcess;
  let keeper: RawClient;
  let keeperCookie = 1_000_000;
  const pattern = Buffer.alloc(KEEP.length);
  const totals = { handshakeCases: 0, requestCases: 0, requests: 0, connections: 0, refused: 0, dropped: 0 };
  let baseRss = 0;

  /** The well-behaved client reads its data back: the server still serves, and nothing overwrote it. */
  async function keeperCheck(): Promise<void> {
    assert.equal(server.proc.exitCode, null, `the server is running: ${server.output().stderr}`);
    assert.deepEqual(await keeper.read(KEEP.offset, KEEP.length, keeperCookie++), pattern);
  }

  async function connect(): Promise<RawClient> {
    totals.connections++;
    return RawClient.connect({ socket });
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-hostile-'));
    image = path.join(dir, 'disk.qcow2');
    socket = path.join(dir, 'nbd.sock');
    await createImage({ filename: image, format: 'qcow2', size: SIZE });
    server = await startVdiskServe([
      '-f',
      'qcow2',
      '-t',
      '-e',
      '0',
      '--discard=unmap',
      `--handshake-limit=${HANDSHAKE_LIMIT_S}`,
      '-v',
      '-k',
      socket,
      image,
    ]);
    keeper = await RawClient.connect({ socket });
    await keeper.handshake();
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
    assert.equal(await keeper.write(KEEP.offset, pattern, keeperCookie++, CMD_FLAG.FUA), 0);
    baseRss = (await processMemory(server.proc.pid!)).rss;
  });

  after(async () => {
    keeper?.close();
    await server?.stop('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`fuzzed handshakes: ${config.nbdFuzzRuns} connections`, async () => {
    await fc.assert(
      fc.asyncProperty(hostileHandshake, async (h) => {
        const c = await connect();
        try {
          await c.take(18);
          const flags = Buffer.alloc(4);
          flags.writeUInt32BE(h.clientFlags >>> 0, 0);
          c.send(flags);
          const sent: number[] = [];
          for (const o of h.options) {
            c.send(encodeHostileOption(o));
            sent.push(o.code >>> 0);
          }
          await settle(c, 60);
          const problems = checkOptionReplies(c.takeAll(), sent);
          assert.deepEqual(problems, []);
        } finally {
          c.close();
        }
        totals.handshakeCases++;
        await keeperCheck();
      }),
      { numRuns: config.nbdFuzzRuns, seed: config.seed, endOnFailure: true },
    );
  });

  it(`fuzzed requests: ${config.nbdFuzzRuns} connections`, async () => {
    await fc.assert(
      fc.asyncProperty(hostileRequests(SIZE), fc.boolean(), async (requests, contexts) => {
        const c = await connect();
        try {
          await c.handshake({ contexts: contexts ? ['base:allocation'] : [] });
          const sent = new Map<number, { request: HostileRequest; whole: boolean }>();
          let cookie = 1;
          for (const raw of requests) {
            const r = keepOut(raw);
            const [bytes, whole] = encodeHostileRequest(r, cookie);
            sent.set(cookie++, { request: r, whole });
            c.send(bytes);
            totals.requests++;
            // The server waits for the rest of a payload that never comes; nothing after it is read.
            if (!whole || !r.magicOk || r.type === CMD.DISC) break;
          }
          const open = await awaitReplies(c, sent);
          const problems = checkTransmissionReplies(c.takeAll(), sent, open);
          assert.deepEqual(problems, []);
        } finally {
          c.close();
        }
        totals.requestCases++;
        await keeperCheck();
      }),
      { numRuns: config.nbdFuzzRuns, seed: config.seed + 1, endOnFailure: true },
    );
  });

  it('hundreds of idle and half-open connections: the others are served, the idle ones dropped in time', async () => {
    const idle: RawClient[] = [];
    let refused = 0;
    for (let i = 0; i < 300; i++) {
      let c: RawClient;
      try {
        c = await connect();
      } catch {
        refused++;
        continue;
      }
      idle.push(c);
      if (i % 3 === 1) {
        // Half-open: the client flags, then the client's side closed.
        void c.need(18, 10_000).then(
          () => {
            c.send(Buffer.from([0, 0, 0, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES]));
            c.socket.end();
          },
          () => {},
        );
      } else if (i % 3 === 2) {
        // A greeting read, then a third of an option header.
        void c.need(18, 10_000).then(
          () => c.send(Buffer.from('IHAVE')),
          () => {},
        );
      }
      if (i % 50 === 0) await keeperCheck();
    }
    await new Promise((r) => setTimeout(r, 200));
    const closedEarly = idle.filter((c) => c.isClosed).length;
    assert.ok(
      closedEarly + refused >= 300 - MAX_CONNECTIONS,
      `past ${MAX_CONNECTIONS} connections, new ones are closed at once (${closedEarly} closed, ${refused} refused)`,
    );
    await keeperCheck();
    // Within the handshake limit (and a margin), every idle one is gone and new clients are served.
    const deadline = Date.now() + (HANDSHAKE_LIMIT_S + 5) * 1000;
    while (idle.some((c) => !c.isClosed) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const left = idle.filter((c) => !c.isClosed).length;
    totals.refused += refused + closedEarly;
    totals.dropped += idle.length - closedEarly;
    for (const c of idle) c.close();
    assert.equal(left, 0, 'connections that never finish the handshake are dropped');
    const fresh = await connect();
    await fresh.handshake();
    assert.deepEqual(await fresh.read(KEEP.offset, 512), pattern.subarray(0, 512));
    fresh.close();
    await keeperCheck();
    const mem = await processMemory(server.proc.pid!);
    assert.ok(mem.rss - baseRss < 64 * MiB, `resident memory grew by ${(mem.rss - baseRss) / MiB} MiB`);
  });

  it('clients that never read and write payloads that never come: memory stays bounded', async () => {
    // 10 clients send 64 NBD_CMD_CACHE requests of 8 MiB each and take the replies.
    const cachers = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const c = await connect();
        await c.handshake();
        for (let k = 0; k < 64; k++) c.request(CMD.CACHE, k + 1, 0, 8 * MiB);
        for (let k = 0; k < 64; k++) assert.equal(replyError(await c.anyReply()), 0);
        c.close();
      }),
    );
    assert.equal(cachers.length, 10);
    // 20 clients ask for 64 x 1 MiB each and read nothing: 1.25 GiB of replies they will not take.
    const deaf: RawClient[] = [];
    for (let i = 0; i < 20; i++) {
      const c = await connect();
      await c.handshake();
      c.socket.pause();
      for (let k = 0; k < 64; k++) c.request(CMD.READ, k + 1, (k % 14) * MiB, MiB, CMD_FLAG.DF);
      deaf.push(c);
    }
    // 60 clients send a 32 MiB WRITE header and 512 KiB of its payload, then stop.
    const stalled: RawClient[] = [];
    for (let i = 0; i < 60; i++) {
      const c = await connect();
      await c.handshake();
      const head = Buffer.alloc(28);
      head.writeUInt32BE(0x25609513, 0);
      head.writeUInt16BE(CMD.WRITE, 6);
      head.writeBigUInt64BE(BigInt(i + 1), 8);
      head.writeUInt32BE(32 * MiB, 24);
      c.send(Buffer.concat([head, Buffer.alloc(512 * 1024, i)]));
      stalled.push(c);
    }
    await new Promise((r) => setTimeout(r, 1500));
    // The budget is taken; a client that holds nothing still gets its small requests served.
    await keeperCheck();
    const mem = await processMemory(server.proc.pid!);
    // The data budget (256 MiB), one fair share (1 MiB) per connection, partial payloads of the
    // paused writers (at most a socket chunk each), and slack for the heap and for buffers the
    // garbage collector has not freed yet (without the budget, these clients take gigabytes).
    const bound = 256 + 82 + 60 * 0.0625 + 200;
    const grown = (mem.peak - baseRss) / MiB;
    assert.ok(grown < bound, `peak resident memory grew by ${grown.toFixed(0)} MiB (bound ${bound.toFixed(0)} MiB)`);
    for (const c of [...stalled, ...deaf]) c.close();
    await new Promise((r) => setTimeout(r, 300));
    await keeperCheck();
    console.log(
      `[reliability] hostile NBD clients: ${JSON.stringify({ ...totals, baseRssMiB: Math.round(baseRss / MiB), peakGrowthMiB: Math.round(grown) })}`,
    );
  });

  it('the server stops cleanly and the image is consistent', {
    skip: !hasCommand('qemu-img') && 'qemu-img is not installed',
  }, async () => {
    await keeperCheck();
    keeper.close();
    assert.equal(await server.stop('SIGTERM'), 0, server.output().stderr.slice(-2000));
    const r = await run('qemu-img', ['check', '-f', 'qcow2', '--output=json', image]);
    const check = JSON.parse(r.stdout) as { corruptions?: number; 'check-errors': number };
    assert.equal(check.corruptions ?? 0, 0);
    assert.equal(check['check-errors'], 0);
    const back = await run('qemu-io', ['-f', 'qcow2', '-r', '-c', `read -v ${KEEP.offset} 16`, image]);
    assert.match(back.stdout, /03 0a 11 18 1f 26 2d 34/);
  });
});

/** Fuzzed changes stay out of the well-behaved client's data (else its check would fail for a good reason). */
function keepOut(r: HostileRequest): HostileRequest {
  const changes = r.type === CMD.WRITE || r.type === CMD.TRIM || r.type === CMD.WRITE_ZEROES;
  const end = r.offset + BigInt(r.length);
  if (changes && r.offset < BigInt(KEEP.offset + KEEP.length) && end > BigInt(KEEP.offset)) return { ...r, offset: 0n };
  return r;
}
