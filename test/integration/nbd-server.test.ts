/**
 * The NBD server in process (serveImage) against a raw-socket client: every step of the
 * handshake and the transmission phase, correct requests and garbage, while another client
 * keeps working; limits (handshake timeout, shared clients, backpressure); shutdown.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/nbd-wire/handshake-codec.js';
import {
  CHUNK,
  CMD,
  CMD_FLAG,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  INFO,
  NBD_ERR,
  OPT,
  REP,
  TF,
} from '../../src/nbd-wire/protocol.js';
import { createImage } from '../../src/tools/create.js';
import { type ServeHandle, type ServeOptions, serveImage } from '../../src/tools/serve.js';
import { RawClient, replyError } from '../helpers/nbd-client.js';
import { withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

async function withServer(
  fn: (h: ServeHandle, dir: string, image: string) => Promise<void>,
  options: Partial<ServeOptions> & { imageFormat?: 'raw' | 'qcow2'; size?: number } = {},
): Promise<void> {
  await withTempDir(async (dir) => {
    const image = path.join(dir, 'disk.img');
    const format = options.imageFormat ?? 'raw';
    await createImage({ filename: image, format, size: options.size ?? 4 * MiB });
    const h = await serveImage({
      filename: image,
      format,
      socket: path.join(dir, 'nbd.sock'),
      persistent: true,
      shared: 0,
      ...options,
    });
    try {
      await fn(h, dir, image);
    } finally {
      await h.close();
    }
  });
}

async function connect(h: ServeHandle): Promise<RawClient> {
  return RawClient.connect(h.address);
}

/** A second, well-behaved client that must keep working while another misbehaves. */
async function bystander(h: ServeHandle): Promise<{ check: () => Promise<void>; close: () => void }> {
  const c = await connect(h);
  await c.handshake();
  let cookie = 1000;
  const pattern = Buffer.alloc(4096, 0x5a);
  assert.equal(await c.write(3 * MiB, pattern, cookie++), 0);
  return {
    check: async () => {
      assert.deepEqual(await c.read(3 * MiB, 4096, cookie++), pattern);
    },
    close: () => c.close(),
  };
}

describe('NBD handshake', () => {
  it('greets with fixed newstyle and no zeroes, and lists the export', async () => {
    await withServer(
      async (h) => {
        const c = await connect(h);
        assert.equal(await c.greet(), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        const list = await c.option(OPT.LIST);
        assert.equal(list.length, 2);
        assert.equal(list[0]!.type, REP.SERVER);
        assert.equal(list[0]!.data.readUInt32BE(0), 3);
        assert.equal(list[0]!.data.toString('utf8', 4, 7), 'exp');
        assert.equal(list[0]!.data.toString('utf8', 7), 'my disk');
        assert.equal(list[1]!.type, REP.ACK);
        const info = await c.option(OPT.INFO, encodeInfoRequest('exp', [INFO.NAME, INFO.BLOCK_SIZE]));
        const types = info.map((r) => (r.type === REP.INFO ? r.data.readUInt16BE(0) : r.type));
        assert.deepEqual(types, [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE, INFO.EXPORT, REP.ACK]);
        const bs = info[2]!.data;
        assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [1, 4096, 32 * MiB]);
        const exp = info[3]!.data;
        assert.equal(Number(exp.readBigUInt64BE(2)), 4 * MiB);
        assert.equal(exp.readUInt16BE(10) & TF.SEND_DF, 0, 'no DF before structured replies');
        assert.equal((await c.option(OPT.ABORT))[0]!.type, REP.ACK);
        assert.ok(await c.closesWithin(2000));
      },
      { exportName: 'exp', description: 'my disk' },
    );
  });

  it('answers bad options with errors and keeps negotiating', async () => {
    await withServer(async (h) => {
      const other = await bystander(h);
      const c = await connect(h);
      await c.greet();
      assert.equal((await c.option(99))[0]!.type, REP.ERR_UNSUP);
      assert.equal((await c.option(OPT.LIST, Buffer.from('x')))[0]!.type, REP.ERR_INVALID);
      assert.equal((await c.option(OPT.STARTTLS))[0]!.type, REP.ERR_POLICY);
      assert.equal((await c.option(OPT.GO, encodeInfoRequest('nope')))[0]!.type, REP.ERR_UNKNOWN);
      // A 4097-byte name is over the string limit: refused, the connection lives on.
      const long = await c.option(OPT.GO, encodeInfoRequest('x'.repeat(4097)));
      assert.equal(long[0]!.type, REP.ERR_INVALID);
      assert.match(long[0]!.data.toString(), /Invalid export name length: 4097/);
      // Inconsistent lengths inside the option.
      const bad = Buffer.alloc(8);
      bad.writeUInt32BE(100, 0);
      assert.equal((await c.option(OPT.INFO, bad))[0]!.type, REP.ERR_INVALID);
      assert.equal(
        (await c.option(OPT.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation'])))[0]!.type,
        REP.ERR_INVALID,
        'SET_META_CONTEXT needs structured replies first',
      );
      assert.equal((await c.option(OPT.STRUCTURED_REPLY))[0]!.type, REP.ACK);
      assert.equal((await c.option(OPT.STRUCTURED_REPLY))[0]!.type, REP.ERR_INVALID);
      assert.equal((await c.option(OPT.STRUCTURED_REPLY, Buffer.from('x')))[0]!.type, REP.ERR_INVALID);
      const list = await c.option(OPT.LIST_META_CONTEXT, encodeMetaContextRequest('', []));
      assert.deepEqual(
        list.map((r) => (r.type === REP.META_CONTEXT ? r.data.toString('utf8', 4) : r.type)),
        ['base:allocation', REP.ACK],
      );
      assert.equal(
        (await c.option(OPT.LIST_META_CONTEXT, encodeMetaContextRequest('zz', [])))[0]!.type,
        REP.ERR_UNKNOWN,
      );
      // Still able to go.
      const go = await c.option(OPT.GO, encodeInfoRequest(''));
      assert.equal(go[go.length - 1]!.type, REP.ACK);
      const exp = go.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT)!;
      assert.equal(exp.data.readUInt16BE(10) & TF.SEND_DF, TF.SEND_DF);
      assert.deepEqual(await c.read(0, 512), Buffer.alloc(512));
      await other.check();
      c.close();
      other.close();
    });
  });

  const fatal: Array<[string, (c: RawClient) => Promise<void>]> = [
    ['unknown client flags', async (c) => void (await c.greet(0x80))],
    [
      'a bad option magic',
      async (c) => {
        await c.greet();
        c.send(Buffer.alloc(16, 0x41));
      },
    ],
    [
      'an option length of 2^32-1',
      async (c) => {
        await c.greet();
        const opt = encodeOption(OPT.GO);
        opt.writeUInt32BE(0xffffffff, 12);
        c.send(opt);
        const r = await c.optionReply();
        assert.equal(r.type, REP.ERR_TOO_BIG);
      },
    ],
    [
      'an export name of 4097 bytes in NBD_OPT_EXPORT_NAME',
      async (c) => {
        await c.greet();
        c.send(encodeOption(OPT.EXPORT_NAME, Buffer.alloc(4097, 0x61)));
      },
    ],
    [
      'NBD_OPT_EXPORT_NAME of an unknown export',
      async (c) => {
        await c.greet();
        c.send(encodeOption(OPT.EXPORT_NAME, Buffer.from('nope')));
      },
    ],
    [
      'garbage instead of the client flags and options',
      async (c) => {
        await c.take(18);
        c.send(Buffer.alloc(4096, 0xff));
      },
    ],
  ];
  for (const [what, act] of fatal) {
    it(`drops the connection on ${what}, and only that one`, async () => {
      await withServer(async (h) => {
        const other = await bystander(h);
        const c = await connect(h);
        await act(c);
        assert.ok(await c.closesWithin(3000), 'the server closes the connection');
        await other.check();
        other.close();
      });
    });
  }

  it('serves old clients with NBD_OPT_EXPORT_NAME, with and without the zero padding', async () => {
    await withServer(async (h) => {
      for (const flags of [FLAG_FIXED_NEWSTYLE, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES]) {
        const c = await connect(h);
        await c.greet(flags);
        c.send(encodeOption(OPT.EXPORT_NAME));
        const reply = await c.take(flags & FLAG_NO_ZEROES ? 10 : 134);
        assert.equal(Number(reply.readBigUInt64BE(0)), 4 * MiB);
        // Without structured replies, a read gets a simple reply followed by the data.
        c.request(CMD.READ, 5, 0, 1024);
        assert.deepEqual(await c.simpleReply(), { error: 0, cookie: 5 });
        assert.deepEqual(await c.take(1024), Buffer.alloc(1024));
        c.request(CMD.READ, 6, 4 * MiB, 1);
        assert.deepEqual(await c.simpleReply(), { error: NBD_ERR.EINVAL, cookie: 6 });
        assert.equal(c.pending, 0, 'no data after an error');
        c.request(CMD.DISC, 7, 0, 0);
        assert.ok(await c.closesWithin(2000));
      }
    });
  });

  it('drops clients that do not finish the handshake in time', async () => {
    await withServer(
      async (h) => {
        const idle = await connect(h);
        const start = Date.now();
        assert.ok(await idle.closesWithin(3000));
        assert.ok(Date.now() - start >= 250);
        // A slow but working client is fine if it finishes in time.
        const c = await connect(h);
        await c.handshake();
        assert.deepEqual(await c.read(0, 16), Buffer.alloc(16));
        c.close();
      },
      { handshakeTimeout: 0.3 },
    );
  });

  it('serves at most --shared clients at once; the next one waits its turn', async () => {
    await withServer(
      async (h) => {
        const first = await connect(h);
        await first.handshake();
        const second = await connect(h);
        await assert.rejects(second.need(1, 300), /timed out/, 'no greeting while the first is served');
        first.request(CMD.DISC, 1, 0, 0);
        await first.closed;
        await second.handshake();
        assert.deepEqual(await second.read(0, 8), Buffer.alloc(8));
        second.close();
      },
      { shared: 1 },
    );
  });
});

describe('NBD server under random garbage', () => {
  it('survives random bytes at each step of the handshake and the transmission phase', async () => {
    await withServer(async (h) => {
      const other = await bystander(h);
      let seed = 12345;
      const random = (n: number) => {
        const b = Buffer.alloc(n);
        for (let i = 0; i < n; i++) {
          seed = (seed * 1103515245 + 12345) & 0x7fffffff;
          b[i] = seed >> 16;
        }
        return b;
      };
      // Plausible headers with random fields are more interesting than pure noise.
      const randomOption = () => {
        const data = random(seed % 64);
        const opt = encodeOption(seed % 16, data);
        if (seed % 3 === 0) opt.writeUInt32BE(seed, 12); // a lying length
        return opt;
      };
      const randomRequest = () => {
        const r = random(28);
        r.writeUInt32BE(0x25609513, 0);
        r.writeUInt16BE(seed % 10, 6); // mostly known commands
        if (seed % 2) r.writeUInt32BE(0, 16); // offsets often in range
        if (seed % 4) r.writeUInt32BE(seed % (8 * MiB), 20);
        const type = r.readUInt16BE(6);
        if (type === CMD.WRITE || type === CMD.WRITE_ZEROES || type === CMD.TRIM) {
          // Changes stay below 2 MiB + 4 KiB, away from the bystander's data at 3 MiB.
          r.writeUInt32BE(0, 16);
          r.writeUInt32BE(seed % (2 * MiB), 20);
          r.writeUInt32BE(seed % 4096, 24);
        }
        return r;
      };
      for (let round = 0; round < 60; round++) {
        const c = await connect(h);
        const step = round % 3;
        if (step === 0) {
          await c.take(18);
          c.send(random(1 + (round % 40)));
        } else if (step === 1) {
          await c.greet();
          for (let i = 0; i < 5; i++) c.send(randomOption());
        } else {
          await c.handshake({ contexts: ['base:allocation'] });
          for (let i = 0; i < 20; i++) c.send(randomRequest());
        }
        await new Promise((r) => setTimeout(r, 5));
        c.close();
        await other.check();
      }
      other.close();
    });
  });
});

describe('NBD transmission', () => {
  it('reads and writes with structured replies: holes, data, DF, FUA, zeroes, trim, flush, cache', async () => {
    await withServer(
      async (h, _dir, image) => {
        const c = await connect(h);
        const { flags } = await c.handshake();
        assert.equal(flags & TF.READ_ONLY, 0);
        assert.equal(flags & TF.CAN_MULTI_CONN, TF.CAN_MULTI_CONN);
        const data = Buffer.alloc(64 * 1024);
        for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 255;
        assert.equal(await c.write(MiB, data, 1, CMD_FLAG.FUA), 0);
        assert.deepEqual(await c.read(MiB, data.length), data);

        // A hole reads as one OFFSET_HOLE chunk; with DF, as one data chunk.
        c.request(CMD.READ, 2, 0, 8192);
        const hole = await c.structuredReply();
        assert.deepEqual(
          hole.map((x) => x.type),
          [CHUNK.OFFSET_HOLE],
        );
        assert.equal(hole[0]!.payload.readUInt32BE(8), 8192);
        c.request(CMD.READ, 3, 0, 8192, CMD_FLAG.DF);
        const df = await c.structuredReply();
        assert.deepEqual(
          df.map((x) => x.type),
          [CHUNK.OFFSET_DATA],
        );
        assert.equal(df[0]!.payload.length, 8 + 8192);

        // A large read over data and zeros: data chunks and hole chunks that cover it exactly.
        c.request(CMD.READ, 4, MiB - 256 * 1024, 512 * 1024);
        const mixed = await c.structuredReply();
        assert.ok(mixed.some((x) => x.type === CHUNK.OFFSET_HOLE));
        assert.ok(mixed.some((x) => x.type === CHUNK.OFFSET_DATA));
        assert.deepEqual(
          await c.read(MiB - 256 * 1024, 512 * 1024),
          (await readFile(image)).subarray(768 * 1024, 1280 * 1024),
        );

        c.request(CMD.WRITE_ZEROES, 5, MiB, 4096, CMD_FLAG.NO_HOLE);
        assert.equal(replyError(await c.anyReply()), 0);
        c.request(CMD.WRITE_ZEROES, 6, MiB + 4096, 4096, CMD_FLAG.FAST_ZERO);
        const fast = replyError(await c.anyReply());
        assert.ok(fast === 0 || fast === NBD_ERR.ENOTSUP);
        c.request(CMD.TRIM, 7, 2 * MiB, 65536);
        assert.equal(replyError(await c.anyReply()), 0);
        c.request(CMD.FLUSH, 8, 0, 0);
        assert.equal(replyError(await c.anyReply()), 0);
        c.request(CMD.CACHE, 9, 0, MiB);
        assert.equal(replyError(await c.anyReply()), 0);
        assert.deepEqual(await c.read(MiB, 4096), Buffer.alloc(4096));
        assert.deepEqual(await c.read(MiB + 8192, 4096), data.subarray(8192, 12288));
        c.request(CMD.DISC, 10, 0, 0);
        assert.ok(await c.closesWithin(2000));
        const file = await readFile(image);
        assert.deepEqual(file.subarray(MiB + 8192, MiB + 65536), data.subarray(8192));
      },
      { discard: 'unmap' },
    );
  });

  it('answers bad requests with the spec errors while another client keeps working', async () => {
    await withServer(async (h) => {
      const other = await bystander(h);
      const c = await connect(h);
      await c.handshake();
      const size = 4 * MiB;
      const expect = async (error: number, what: string) => {
        const r = await c.anyReply();
        assert.equal(replyError(r), error, what);
        if (r.kind === 'chunk') assert.equal(r.flags & 1, 1, 'error chunks end the reply');
        await other.check();
      };
      c.request(CMD.READ, 1, size - 512, 1024);
      await expect(NBD_ERR.EINVAL, 'read past the end');
      c.request(CMD.READ, 2, 0xffff_ffff_ffff_fe00n, 512);
      await expect(NBD_ERR.EINVAL, 'read at 2^64-512');
      c.request(CMD.READ, 3, 0, 0xffffffff);
      await expect(NBD_ERR.EINVAL, 'read of 4 GiB');
      c.request(CMD.WRITE, 4, size, 4, 0, Buffer.alloc(4));
      await expect(NBD_ERR.ENOSPC, 'write past the end');
      c.request(CMD.WRITE_ZEROES, 5, size - 4096, 8192);
      await expect(NBD_ERR.ENOSPC, 'zeroes past the end');
      c.request(CMD.TRIM, 6, size, 1);
      await expect(NBD_ERR.EINVAL, 'trim past the end');
      c.request(99, 7, 0, 0);
      await expect(NBD_ERR.EINVAL, 'unknown command');
      c.request(CMD.READ, 8, 0, 512, 0x8000);
      await expect(NBD_ERR.EINVAL, 'unknown flag');
      c.request(CMD.WRITE, 9, 0, 4, CMD_FLAG.DF, Buffer.alloc(4));
      await expect(NBD_ERR.EINVAL, 'DF on a write');
      c.request(CMD.BLOCK_STATUS, 10, 0, 4096);
      await expect(NBD_ERR.EINVAL, 'block status without a context');
      c.request(CMD.CACHE, 11, 0, 64 * MiB);
      await expect(NBD_ERR.EINVAL, 'cache of more than the maximum');
      // Zero-length requests are answered, not fatal.
      c.request(CMD.READ, 12, 0, 0);
      await expect(0, 'read of 0 bytes');
      c.request(CMD.WRITE, 13, 0, 0);
      await expect(0, 'write of 0 bytes');
      c.request(CMD.WRITE_ZEROES, 15, 4096, 0);
      await expect(0, 'zeroes of 0 bytes');
      c.request(CMD.TRIM, 16, size, 0);
      await expect(0, 'trim of 0 bytes at the end');
      c.request(CMD.FLUSH, 17, 0, 0, CMD_FLAG.FUA);
      await expect(0, 'flush with FUA');
      // The connection still works.
      assert.deepEqual(await c.read(0, 100), Buffer.alloc(100));
      // A WRITE claiming 4 GiB of payload cannot be skipped: EINVAL, then the connection is closed.
      c.request(CMD.WRITE, 14, 0, 0xffffffff);
      await expect(NBD_ERR.EINVAL, 'write of 4 GiB');
      assert.ok(await c.closesWithin(3000));
      // A bad request magic: hard disconnect.
      const d = await connect(h);
      await d.handshake();
      d.send(Buffer.alloc(28, 0x11));
      assert.ok(await d.closesWithin(3000));
      await other.check();
      other.close();
    });
  });

  it('refuses writes on a read-only export with EPERM', async () => {
    await withServer(
      async (h) => {
        const c = await connect(h);
        const { flags } = await c.handshake();
        assert.equal(flags & TF.READ_ONLY, TF.READ_ONLY);
        assert.equal(flags & (TF.SEND_TRIM | TF.SEND_WRITE_ZEROES), 0);
        assert.equal(await c.write(0, Buffer.alloc(512)), NBD_ERR.EPERM);
        c.request(CMD.TRIM, 3, 0, 512);
        assert.equal(replyError(await c.anyReply()), NBD_ERR.EPERM);
        assert.deepEqual(await c.read(0, 512), Buffer.alloc(512));
        c.close();
      },
      { readOnly: true },
    );
  });

  it('answers BLOCK_STATUS for base:allocation and qemu:allocation-depth, with REQ_ONE', async () => {
    await withServer(
      async (h) => {
        const c = await connect(h);
        const { contextIds } = await c.handshake({ contexts: ['base:allocation', 'qemu:allocation-depth'] });
        assert.deepEqual(
          [...contextIds.entries()],
          [
            ['base:allocation', 0],
            ['qemu:allocation-depth', 1],
          ],
        );
        assert.equal(await c.write(64 * 1024, Buffer.alloc(64 * 1024, 1)), 0);
        c.request(CMD.BLOCK_STATUS, 5, 0, 4 * MiB);
        const chunks = await c.structuredReply();
        assert.equal(chunks.length, 2);
        const decode = (p: Buffer) => {
          const out: Array<[number, number]> = [];
          for (let off = 4; off < p.length; off += 8) out.push([p.readUInt32BE(off), p.readUInt32BE(off + 4)]);
          return { id: p.readUInt32BE(0), extents: out };
        };
        const base = decode(chunks[0]!.payload);
        assert.equal(base.id, 0);
        assert.deepEqual(base.extents, [
          [65536, 3],
          [65536, 0],
          [4 * MiB - 131072, 3],
        ]);
        const depth = decode(chunks[1]!.payload);
        assert.equal(depth.id, 1);
        assert.deepEqual(depth.extents, [
          [65536, 0],
          [65536, 1],
          [4 * MiB - 131072, 0],
        ]);
        assert.equal(chunks[1]!.flags & 1, 1);
        c.request(CMD.BLOCK_STATUS, 6, 4096, 4 * MiB - 4096, CMD_FLAG.REQ_ONE);
        const one = await c.structuredReply();
        assert.deepEqual(decode(one[0]!.payload).extents, [[61440, 3]]);
        assert.deepEqual(decode(one[1]!.payload).extents, [[61440, 0]]);
        c.request(CMD.BLOCK_STATUS, 7, 0, 0);
        assert.equal(replyError(await c.anyReply()), NBD_ERR.EINVAL);
        c.request(CMD.BLOCK_STATUS, 8, 4 * MiB, 1);
        assert.equal(replyError(await c.anyReply()), NBD_ERR.EINVAL);
        c.close();
      },
      { imageFormat: 'qcow2', allocationDepth: true },
    );
  });

  it('keeps many requests in flight, replies in completion order, and survives a pipelined flood', async () => {
    await withServer(
      async (h) => {
        const c = await connect(h);
        await c.handshake();
        const n = 300;
        const expected = new Map<number, Buffer>();
        for (let i = 0; i < n; i++) {
          const buf = Buffer.alloc(4096, i & 255);
          expected.set(i, buf);
          c.request(CMD.WRITE, i, i * 4096, 4096, 0, buf);
        }
        const seen = new Set<number>();
        for (let i = 0; i < n; i++) {
          const r = await c.anyReply();
          assert.equal(replyError(r), 0);
          seen.add(r.cookie);
        }
        assert.equal(seen.size, n);
        for (let i = 0; i < n; i++) c.request(CMD.READ, 10_000 + i, i * 4096, 4096, CMD_FLAG.DF);
        for (let i = 0; i < n; i++) {
          const [chunk] = await c.structuredReply();
          const at = chunk!.cookie - 10_000;
          assert.deepEqual(chunk!.payload.subarray(8), expected.get(at));
        }
        c.close();
      },
      { limits: { maxInFlightRequests: 8, maxInFlightBytes: 64 * 1024 } },
    );
  });

  it('stops reading from a client that does not read its replies', async () => {
    await withServer(
      async (h) => {
        const c = await connect(h);
        await c.handshake();
        c.socket.pause(); // read nothing
        const before = h.backend.counters.reads;
        for (let i = 0; i < 400; i++) c.request(CMD.READ, i, 0, MiB, CMD_FLAG.DF);
        await new Promise((r) => setTimeout(r, 1500));
        const served = h.backend.counters.reads - before;
        assert.ok(served < 200, `the server read ${served} MiB for a client that reads nothing`);
        // Reading the replies lets everything through.
        c.socket.resume();
        for (let i = 0; i < 400; i++) await c.structuredReply();
        c.close();
      },
      { size: 2 * MiB, limits: { maxUnreadReplies: 8 * MiB, maxInFlightBytes: 16 * MiB } },
    );
  });

  it('refuses a data budget that is not a positive number, before listening', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.img');
      await createImage({ filename: image, format: 'raw', size: MiB });
      const socket = path.join(dir, 'nbd.sock');
      for (const maxBufferedBytes of [0, -1, Number.NaN]) {
        await assert.rejects(serveImage({ filename: image, format: 'raw', socket, maxBufferedBytes }), {
          code: 'EINVAL',
          message: /Invalid data budget/,
        });
      }
      await assert.rejects(readFile(socket), { code: 'ENOENT' }, 'no socket was left behind');
    });
  });

  it('bounds the data all clients together make it hold, and still serves a client that holds nothing', async () => {
    await withServer(
      async (h) => {
        const deaf: RawClient[] = [];
        const before = h.backend.counters.reads;
        for (let i = 0; i < 3; i++) {
          const c = await connect(h);
          await c.handshake();
          c.socket.pause();
          for (let k = 0; k < 64; k++) c.request(CMD.READ, k, (k % 12) * MiB, MiB, CMD_FLAG.DF);
          deaf.push(c);
        }
        await new Promise((r) => setTimeout(r, 1000));
        const served = h.backend.counters.reads - before;
        // 8 MiB of budget, plus one fair share (1 MiB) for each client when it held nothing.
        assert.ok(served >= 6 && served <= 8 + 3, `the server read ${served} MiB for clients that read nothing`);
        const other = await connect(h);
        await other.handshake();
        assert.deepEqual(await other.read(0, 65536), Buffer.alloc(65536), 'a client holding nothing is served');
        other.close();
        // Once they read, every request is answered.
        for (const c of deaf) {
          c.socket.resume();
          for (let k = 0; k < 64; k++) await c.structuredReply();
          c.close();
        }
      },
      { size: 16 * MiB, maxBufferedBytes: 8 * MiB, limits: { maxUnreadReplies: 64 * MiB } },
    );
  });

  it('while requests wait for the budget, drops clients that take no replies or stop a write payload', async () => {
    await withServer(
      async (h) => {
        // Holds 2 MiB of replies it never takes, and waits for more.
        const deaf = await connect(h);
        await deaf.handshake();
        deaf.socket.pause();
        for (let k = 0; k < 8; k++) deaf.request(CMD.READ, k, 0, MiB, CMD_FLAG.DF);
        // Holds a 1 MiB reservation for a payload that stops after 1000 bytes.
        const staller = await connect(h);
        await staller.handshake();
        const head = Buffer.alloc(28);
        head.writeUInt32BE(0x25609513, 0);
        head.writeUInt16BE(CMD.WRITE, 6);
        head.writeUInt32BE(MiB, 24);
        staller.send(Buffer.concat([head, Buffer.alloc(1000)]));
        const idle = await connect(h);
        await idle.handshake();
        await new Promise((r) => setTimeout(r, 100));
        // A 3 MiB read is more than the budget: it waits until the two holders are gone.
        const waiter = await connect(h);
        await waiter.handshake();
        const started = Date.now();
        assert.deepEqual(await waiter.read(0, 3 * MiB), Buffer.alloc(3 * MiB));
        assert.ok(Date.now() - started >= 300, 'the read waited for the stalled clients to be dropped');
        assert.ok(await staller.closesWithin(3000), 'the client that stopped its payload is dropped');
        // A paused socket sees the server's close only once it reads what was sent before.
        deaf.socket.resume();
        assert.ok(await deaf.closesWithin(3000), 'the client that took no replies is dropped');
        assert.equal(idle.isClosed, false, 'an idle client that holds nothing stays');
        assert.deepEqual(await idle.read(0, 512), Buffer.alloc(512));
        for (const c of [idle, waiter]) c.close();
      },
      { size: 4 * MiB, maxBufferedBytes: 2 * MiB, limits: { stallTimeoutMs: 400 } },
    );
  });

  it('without a wait for the budget, a client that reads nothing keeps its connection', async () => {
    await withServer(
      async (h) => {
        const slow = await connect(h);
        await slow.handshake();
        slow.socket.pause();
        for (let k = 0; k < 4; k++) slow.request(CMD.READ, k, 0, MiB, CMD_FLAG.DF);
        await new Promise((r) => setTimeout(r, 800));
        slow.socket.resume();
        for (let k = 0; k < 4; k++) await slow.structuredReply();
        assert.equal(slow.isClosed, false);
        slow.close();
      },
      { size: 4 * MiB, limits: { stallTimeoutMs: 200 } },
    );
  });

  it('finishes requests in flight and closes the image when the server stops', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await createImage({ filename: image, format: 'qcow2', size: 8 * MiB });
      const h = await serveImage({
        filename: image,
        format: 'qcow2',
        socket: path.join(dir, 's'),
        persistent: true,
      });
      const c = await connect(h);
      await c.handshake();
      const data = Buffer.alloc(MiB, 0xcd);
      for (let i = 0; i < 8; i++) c.request(CMD.WRITE, i, i * MiB, MiB, 0, data);
      // Stop the server once it is working on the requests.
      const deadline = Date.now() + 10_000;
      while (h.backend.inFlight === 0 && h.backend.counters.writes === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 1));
      }
      const closing = h.close();
      const done = new Map<number, number>();
      for (;;) {
        try {
          const r = await c.anyReply();
          done.set(r.cookie, replyError(r));
        } catch {
          break;
        }
      }
      await closing;
      await c.closed;
      // Every request the server started was finished and answered; the rest got ESHUTDOWN or nothing.
      const succeeded = [...done].filter(([, e]) => e === 0).map(([cookie]) => cookie);
      assert.ok(succeeded.length > 0);
      for (const e of done.values()) assert.ok(e === 0 || e === NBD_ERR.ESHUTDOWN, `error ${e}`);
      // Reopening works (the lock is released); what was acknowledged is there.
      const again = await serveImage({
        filename: image,
        format: 'qcow2',
        socket: path.join(dir, 's2'),
        persistent: true,
      });
      const d = await RawClient.connect(again.address);
      await d.handshake();
      for (const cookie of succeeded) assert.deepEqual(await d.read(cookie * MiB, MiB), data);
      d.close();
      await again.close();
    });
  });

  it('exits when the last client leaves unless persistent, as qemu-nbd', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'raw.img');
      await writeFile(image, Buffer.alloc(MiB));
      const h = await serveImage({ filename: image, format: 'raw', socket: path.join(dir, 's') });
      const c = await connect(h);
      await c.handshake();
      c.request(CMD.DISC, 1, 0, 0);
      await h.closed;
      await assert.rejects(RawClient.connect(h.address));
    });
  });
});
