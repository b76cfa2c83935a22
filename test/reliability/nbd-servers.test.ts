/**
 * Hostile and failing NBD servers against vdisk's client (src/remote/nbd): a scripted server
 * (helpers/fake-nbd-server.ts) sends wrong magics, replies for cookies never sent, chunks that
 * overrun or miss the request, extents outside it, oversized lengths, stops answering, or dies in
 * the middle of a reply. Every case must end in a VdiskError with the expected code — never a
 * crash, a hang, or a read that resolves with bytes the server did not send. A fast-check fuzzer
 * then answers READs with random reply streams, within a memory bound.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ERROR_CODES, VdiskError } from '../../src/block/errors.js';
import { openImage } from '../../src/engine/open.js';
import { encodeOptionReply } from '../../src/nbd-wire/handshake-codec.js';
import { CHUNK, CMD, NBD_ERR, OPT, REP } from '../../src/nbd-wire/protocol.js';
import { NbdDriver } from '../../src/remote/nbd/nbd-driver.js';
import {
  chunk,
  dataChunk,
  errorChunk,
  type FakeRequest,
  type FakeScript,
  greeting,
  holeChunk,
  simpleReply,
  startFakeServer,
  statusChunk,
} from '../helpers/fake-nbd-server.js';
import { config, LEVEL } from './lib/config.js';

/** Short timeouts: a case that would hang fails with ETIMEDOUT instead. */
const QUICK = { timeout: 0.3, connectTimeout: 1 };
const FUZZ_RUNS = Number(process.env.VDISK_NBD_SERVER_FUZZ_RUNS ?? (LEVEL === 'long' ? 5000 : 120));

async function withServer<T>(script: FakeScript, fn: (uri: string, requests: FakeRequest[]) => Promise<T>): Promise<T> {
  const server = await startFakeServer(script);
  try {
    return await fn(server.uri, server.requests);
  } finally {
    await server.close();
  }
}

async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp): Promise<VdiskError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof VdiskError, `a VdiskError, not ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** Opens the fake export, runs one READ of 4 KiB at 4096, and closes. */
async function readThrough(uri: string, options = QUICK): Promise<Buffer> {
  const driver = await NbdDriver.open(uri, { ...options, readOnly: true });
  try {
    const buf = Buffer.alloc(4096, 0xee);
    await driver.read(4096, buf);
    return buf;
  } finally {
    await driver.close();
  }
}

/** A script whose READ replies are `reply(request)`. */
function onRead(reply: (r: FakeRequest) => Buffer | Buffer[], extra: Partial<FakeScript> = {}): FakeScript {
  return {
    ...extra,
    onRequest: (r, c) => {
      if (r.type !== CMD.READ) return c.send(simpleReply(r.cookie));
      for (const b of ([] as Buffer[]).concat(reply(r))) c.send(b);
    },
  };
}

describe(`hostile NBD servers (${LEVEL})`, () => {
  describe('in the handshake', () => {
    it('refuses a server that is not NBD, an oldstyle one, and a bad option reply magic', async () => {
      await withServer({ handshake: (c) => c.send(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n\0\0\0')) }, (uri) =>
        rejectsWith(NbdDriver.open(uri, QUICK), 'EPROTO', /not an NBD server/),
      );
      const oldstyle = Buffer.alloc(152);
      oldstyle.write('NBDMAGIC', 0, 'latin1');
      oldstyle.writeBigUInt64BE(0x00420281861253n, 8);
      await withServer({ handshake: (c) => c.send(oldstyle) }, (uri) =>
        rejectsWith(NbdDriver.open(uri, QUICK), 'ENOTSUP', /oldstyle/),
      );
      await withServer(
        {
          handshake: (c, q) => {
            c.send(greeting());
            c.socket.on('data', () => {
              if (q.length >= 4 + 16) c.send(Buffer.alloc(40, 0x41));
            });
          },
        },
        (uri) => rejectsWith(NbdDriver.open(uri, QUICK), 'EPROTO', /option reply magic/),
      );
    });

    it('does not wait for a 4 GiB option reply, nor for endless ones', async () => {
      const huge: FakeScript = {
        answerOption: (option, c) => {
          const head = encodeOptionReply(option, REP.ACK);
          head.writeUInt32BE(0xffffffff, 16);
          c.send(head);
          return true;
        },
      };
      await withServer(huge, (uri) => rejectsWith(NbdDriver.open(uri, QUICK), 'EPROTO', /4294967295 bytes/));
      const endless: FakeScript = {
        answerOption: (option, c) => {
          if (option !== OPT.SET_META_CONTEXT) return false;
          for (let i = 0; i < 100; i++) c.send(encodeOptionReply(option, REP.INFO, Buffer.alloc(24)));
          return true;
        },
      };
      await withServer(endless, (uri) => rejectsWith(NbdDriver.open(uri, QUICK), 'EPROTO', /SET_META_CONTEXT/));
    });

    it('reports an unknown export, and a server that never finishes the handshake', async () => {
      const missing: FakeScript = {
        answerOption: (option, c) => {
          if (option !== OPT.GO) return false;
          c.send(encodeOptionReply(option, REP.ERR_UNKNOWN, Buffer.from('export not present')));
          return true;
        },
      };
      await withServer(missing, (uri) =>
        rejectsWith(NbdDriver.open(uri, QUICK), 'ENOENT', /not available.*export not present/),
      );
      await withServer({ handshake: (c) => c.send(greeting().subarray(0, 10)) }, (uri) =>
        rejectsWith(NbdDriver.open(uri, QUICK), 'ETIMEDOUT', /No connection within 1 s/),
      );
    });
  });

  describe('in the transmission phase', () => {
    it('fails on a bad reply magic, and every later request too', async () => {
      await withServer(
        onRead(() => Buffer.alloc(32, 0x55)),
        async (uri) => {
          const driver = await NbdDriver.open(uri, { ...QUICK, readOnly: true });
          await rejectsWith(driver.read(0, Buffer.alloc(512)), 'EPROTO', /bad reply magic 0x55555555/);
          await rejectsWith(driver.read(0, Buffer.alloc(512)), 'EPROTO');
          await driver.close();
          await driver.close();
        },
      );
    });

    it('fails on a reply for a cookie never sent', async () => {
      const other = Buffer.from('0123456789abcdef', 'hex');
      await withServer(
        onRead(() => simpleReply(other)),
        (uri) => rejectsWith(readThrough(uri), 'EPROTO', /no request waits for/),
      );
    });

    it('fails on chunks that overrun, miss or leave out part of the request, never with a short read', async () => {
      const cases: Array<[string, (r: FakeRequest) => Buffer | Buffer[], RegExp]> = [
        ['longer than the request', (r) => dataChunk(r.cookie, r.offset, Buffer.alloc(8192, 1), true), /longer than/],
        ['outside it', (r) => dataChunk(r.cookie, r.offset + 2048, Buffer.alloc(4096, 1), true), /outside the request/],
        ['before it', (r) => holeChunk(r.cookie, r.offset - 512, 512, true), /outside the request/],
        ['a gap', (r) => dataChunk(r.cookie, r.offset, Buffer.alloc(2048, 1), true), /did not cover it/],
        [
          'an overlap',
          (r) => [
            dataChunk(r.cookie, r.offset + 1024, Buffer.alloc(1024, 1), false),
            dataChunk(r.cookie, r.offset, Buffer.alloc(2048, 2), false),
            dataChunk(r.cookie, r.offset + 3072, Buffer.alloc(1024, 3), true),
          ],
          /did not cover it|overlap/,
        ],
        [
          'a 4 GiB length',
          (r) => chunk(r.cookie, CHUNK.OFFSET_DATA, Buffer.alloc(0), true).fill(0xff, 16, 20),
          /longer than/,
        ],
        ['a simple reply', (r) => simpleReply(r.cookie, 0, Buffer.alloc(4096)), /simple reply to a READ/],
        ['an unknown chunk type', (r) => chunk(r.cookie, 77, Buffer.alloc(4), true), /unknown chunk type 77/],
        ['a status chunk', (r) => statusChunk(r.cookie, 1, [[4096, 0]]), /block status chunk/],
        [
          'an error message overrunning its chunk',
          (r) => {
            const bad = errorChunk(r.cookie, NBD_ERR.EIO, 'disk on fire');
            bad.writeUInt16BE(400, 24);
            return bad;
          },
          /message overruns/,
        ],
        ['an error of 0', (r) => errorChunk(r.cookie, 0, 'fine?'), /error 0/],
      ];
      for (const [what, reply, message] of cases) {
        await withServer(onRead(reply), (uri) => rejectsWith(readThrough(uri), 'EPROTO', message)).catch((err) => {
          throw new Error(`${what}: ${(err as Error).message}`);
        });
      }
    });

    it('fails the request, and only it, when the server reports an error', async () => {
      let n = 0;
      await withServer(
        onRead((r) =>
          n++ === 0
            ? errorChunk(r.cookie, NBD_ERR.ENOSPC, 'quota\x1b[31m exceeded')
            : dataChunk(r.cookie, r.offset, Buffer.alloc(r.length, 0x42), true),
        ),
        async (uri) => {
          const driver = await NbdDriver.open(uri, { ...QUICK, readOnly: true });
          const err = await rejectsWith(driver.read(0, Buffer.alloc(512)), 'ENOSPC', /quota\?\[31m exceeded/);
          assert.doesNotMatch(err.message, /\x1b/);
          const buf = Buffer.alloc(512);
          await driver.read(0, buf);
          assert.deepEqual(buf, Buffer.alloc(512, 0x42));
          await driver.close();
        },
      );
    });

    it('fails with ETIMEDOUT when the server stops answering, and EIO when it dies mid-reply', async () => {
      await withServer(
        onRead(() => []),
        (uri) => rejectsWith(readThrough(uri), 'ETIMEDOUT', /did not answer/),
      );
      await withServer(
        {
          onRequest: (r, c) => {
            c.send(dataChunk(r.cookie, r.offset, Buffer.alloc(r.length, 7), true).subarray(0, 1000));
            setImmediate(() => c.socket.destroy());
          },
        },
        (uri) => rejectsWith(readThrough(uri), 'EIO', /closed the connection/),
      );
    });

    it('clips extents beyond the request and refuses contexts never negotiated or empty extents', async () => {
      const status = (extents: Array<[number, number]>, id = 1): FakeScript => ({
        size: 1 << 20,
        onRequest: (r, c) => c.send(statusChunk(r.cookie, id, extents)),
      });
      await withServer(
        status([
          [8192, 0],
          [1 << 30, 3],
        ]),
        async (uri) => {
          const driver = await NbdDriver.open(uri, { ...QUICK, readOnly: true });
          const first = await driver.blockStatus(0, 65536);
          assert.deepEqual([first.length, first.data, first.zero], [8192, true, false]);
          const second = await driver.blockStatus(8192, 65536 - 8192);
          assert.deepEqual([second.length, second.data, second.zero], [65536 - 8192, false, true]);
          await driver.close();
        },
      );
      await withServer(status([[4096, 0]], 9), async (uri) => {
        const driver = await NbdDriver.open(uri, { ...QUICK, readOnly: true });
        await rejectsWith(driver.blockStatus(0, 4096), 'EPROTO', /context 9/);
        await driver.close();
      });
      await withServer(status([[0, 0]]), async (uri) => {
        const driver = await NbdDriver.open(uri, { ...QUICK, readOnly: true });
        await rejectsWith(driver.blockStatus(0, 4096), 'EPROTO', /length 0/);
        await driver.close();
      });
    });

    it('opens through the engine and reports the failure with the image name', async () => {
      await withServer(
        onRead(() => Buffer.alloc(20, 0x66)),
        async (uri) => {
          const image = await openImage(uri, { format: 'raw', readOnly: true, nbd: QUICK });
          await rejectsWith(image.read(0, 4096), 'EPROTO', /nbd\+unix:\/\/\?socket=.*bad reply magic/);
          await image.close();
        },
      );
    });
  });

  it(`survives ${FUZZ_RUNS} random reply streams: every READ settles, none with bytes never sent`, async () => {
    const fragment = fc.oneof(
      fc.record({
        kind: fc.constant('data' as const),
        at: fc.integer({ min: -16, max: 4112 }),
        len: fc.integer({ min: 0, max: 5000 }),
        done: fc.boolean(),
      }),
      fc.record({
        kind: fc.constant('hole' as const),
        at: fc.integer({ min: -16, max: 4112 }),
        len: fc.integer({ min: 0, max: 5000 }),
        done: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('error' as const), errno: fc.integer({ min: 0, max: 200 }), done: fc.boolean() }),
      fc.record({ kind: fc.constant('simple' as const), errno: fc.constantFrom(0, 5, 22) }),
      fc.record({ kind: fc.constant('raw' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
      fc.record({
        kind: fc.constant('header' as const),
        type: fc.integer({ min: 0, max: 0xffff }),
        flags: fc.integer({ min: 0, max: 3 }),
        len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constant(0xffffffff)),
      }),
    );
    const stream = fc.record({
      fragments: fc.array(fragment, { maxLength: 6 }),
      wrongCookie: fc.boolean(),
      end: fc.constantFrom('close', 'stall', 'cut'),
    });
    const before = process.memoryUsage();
    let resolved = 0;
    await fc.assert(
      fc.asyncProperty(stream, async (s) => {
        const script: FakeScript = {
          onRequest: (r, c) => {
            const cookie = s.wrongCookie ? Buffer.from(r.cookie).fill(0x99, 0, 1) : r.cookie;
            const parts: Buffer[] = [];
            for (const f of s.fragments) {
              // Data never holds 0xee, the sentinel: a resolved read with 0xee left was a short read.
              if (f.kind === 'data')
                parts.push(dataChunk(cookie, r.offset + f.at, Buffer.alloc(Math.max(0, f.len), 0x5a), f.done));
              else if (f.kind === 'hole') parts.push(holeChunk(cookie, Math.max(0, r.offset + f.at), f.len, f.done));
              else if (f.kind === 'error') parts.push(errorChunk(cookie, f.errno, 'fuzz', f.done));
              else if (f.kind === 'simple') parts.push(simpleReply(cookie, f.errno));
              else if (f.kind === 'raw') parts.push(Buffer.from(f.bytes));
              else
                parts.push(
                  chunk(cookie, f.type, Buffer.alloc(Math.min(f.len, 64)), (f.flags & 1) === 1).fill(
                    0xff,
                    16,
                    f.len === 0xffffffff ? 20 : 16,
                  ),
                );
            }
            const all = Buffer.concat(parts);
            c.send(s.end === 'cut' ? all.subarray(0, all.length >> 1) : all);
            if (s.end !== 'stall') setImmediate(() => c.socket.destroy());
          },
        };
        await withServer(script, async (uri) => {
          try {
            const buf = await readThrough(uri, { timeout: 0.2, connectTimeout: 1 });
            resolved++;
            assert.equal(buf.indexOf(0xee), -1, 'a READ resolved with bytes the server never sent');
          } catch (err) {
            assert.ok(err instanceof VdiskError, `not a VdiskError: ${String(err)}`);
            assert.ok((ERROR_CODES as readonly string[]).includes(err.code));
          }
        });
      }),
      { numRuns: FUZZ_RUNS, seed: config.seed },
    );
    const after = process.memoryUsage();
    const growth = after.heapUsed + after.external - (before.heapUsed + before.external);
    assert.ok(growth < config.caseMemoryBytes, `memory grew by ${growth} bytes`);
    assert.ok(resolved < FUZZ_RUNS, 'some random streams must fail');
  });
});
