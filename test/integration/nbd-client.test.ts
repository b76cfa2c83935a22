/**
 * vdisk's NBD client against vdisk's own server (in this process) and a scripted one: data
 * written through the client reads back through the server's image, every command the server
 * advertises goes out with the right flags, replies out of order land in the right buffers,
 * several connections share the work when the server allows it, a lost connection is reopened
 * within the reconnect delay, close() says NBD_CMD_DISC, and an overlay on a remote base reads
 * through.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { openImage } from '../../src/engine/open.js';
import { encodeOptionReply } from '../../src/nbd-wire/handshake-codec.js';
import { CMD, CMD_FLAG, OPT, REP, TF } from '../../src/nbd-wire/protocol.js';
import { NbdDriver } from '../../src/remote/nbd/nbd-driver.js';
import { createImage } from '../../src/tools/create.js';
import { mapImage } from '../../src/tools/map.js';
import { serveImage } from '../../src/tools/serve.js';
import { dataChunk, noneChunk, simpleReply, startFakeServer } from '../helpers/fake-nbd-server.js';
import { withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

async function served<T>(
  dir: string,
  options: { format?: 'raw' | 'qcow2'; shared?: number; readOnly?: boolean },
  fn: (uri: string, image: string) => Promise<T>,
): Promise<T> {
  const format = options.format ?? 'qcow2';
  const image = path.join(dir, `disk.${format}`);
  await createImage({ filename: image, format, size: 64 * MiB });
  const server = await serveImage({
    filename: image,
    format,
    socket: path.join(dir, 'nbd.sock'),
    persistent: true,
    shared: options.shared ?? 0,
    readOnly: options.readOnly,
  });
  try {
    return await fn(server.uri, image);
  } finally {
    await server.close();
  }
}

describe('the NBD client', () => {
  it('writes and reads back patterns, zeroes, trims and flushes through vdisk serve', async () => {
    await withTempDir(async (dir) => {
      const pattern = randomBytes(3 * MiB + 4097);
      await served(dir, {}, async (uri, image) => {
        const remote = await openImage(uri, { format: 'raw' });
        const d = remote.describe();
        assert.deepEqual(
          [d.format, d.virtualSize, d.capabilities.fua, d.capabilities.writeZeroes],
          ['raw', 64 * MiB, true, true],
        );
        await remote.write(1000, pattern, { fua: true });
        await remote.writeZeroes(8 * MiB, 2 * MiB, { mayUnmap: true });
        await remote.write(8 * MiB + 4096, Buffer.alloc(4096, 0x33));
        await remote.discard(32 * MiB, MiB);
        await remote.flush();
        assert.deepEqual(await remote.read(1000, pattern.length), pattern);
        const zeroed = await remote.read(8 * MiB, 2 * MiB);
        assert.equal(
          zeroed.subarray(0, 4096).every((b) => b === 0),
          true,
        );
        assert.deepEqual(zeroed.subarray(4096, 8192), Buffer.alloc(4096, 0x33));
        await remote.close();
        await remote.close();
        // The served image holds the same bytes (read while the server still holds it).
        const local = await openImage(image, { format: 'qcow2', readOnly: true, forceShare: true });
        assert.deepEqual(await local.read(1000, pattern.length), pattern);
        await local.close();
      });
    });
  });

  it('maps an export from its block status, as the served image maps', async () => {
    await withTempDir(async (dir) => {
      await served(dir, {}, async (uri) => {
        const remote = await openImage(uri, { format: 'raw' });
        await remote.write(0, Buffer.alloc(64 * 1024, 1));
        await remote.write(5 * MiB, Buffer.alloc(128 * 1024, 2));
        const map = await mapImage(remote);
        await remote.close();
        const data = map.filter((e) => e.data).map((e) => [e.start, e.length]);
        assert.deepEqual(data, [
          [0, 64 * 1024],
          [5 * MiB, 128 * 1024],
        ]);
        assert.equal(
          map.every((e) => e.filename === uri.replace(':///?', '://?')),
          true,
        );
      });
    });
  });

  it('refuses writes to a read-only export, and opens it read-only when asked', async () => {
    await withTempDir(async (dir) => {
      await served(dir, { readOnly: true }, async (uri) => {
        await assert.rejects(
          openImage(uri, { format: 'raw' }),
          (err: unknown) => err instanceof VdiskError && err.code === 'EROFS',
        );
        const ro = await openImage(uri, { format: 'raw', readOnly: true });
        assert.equal(ro.readOnly, true);
        await ro.close();
      });
    });
  });

  it('uses several connections when the server advertises multi-conn, and one otherwise', async () => {
    await withTempDir(async (dir) => {
      await served(dir, { shared: 0 }, async (uri) => {
        const driver = await NbdDriver.open(uri, { connections: 4 });
        assert.equal(driver.connections, 4);
        const pattern = randomBytes(8 * MiB);
        await driver.write(0, pattern);
        await driver.flush();
        const back = Buffer.alloc(pattern.length);
        await driver.read(0, back);
        assert.deepEqual(back, pattern);
        await driver.close();
      });
      await served(dir, { shared: 1 }, async (uri) => {
        const driver = await NbdDriver.open(uri, { connections: 4 });
        assert.equal(driver.connections, 1);
        await driver.close();
      });
    });
  });

  it('matches replies sent out of order, sends the flags the server advertises, and says NBD_CMD_DISC', async () => {
    const held: Array<() => void> = [];
    const server = await startFakeServer({
      size: 4 * MiB,
      onRequest: (r, c) => {
        if (r.type !== CMD.READ)
          return c.send(r.type === CMD.BLOCK_STATUS ? noneChunk(r.cookie) : simpleReply(r.cookie));
        held.push(() => c.send(dataChunk(r.cookie, r.offset, Buffer.alloc(r.length, r.offset / 65536), true)));
        // Answer the batch backwards once all eight are in.
        if (held.length === 8) for (const send of held.reverse()) send();
      },
    });
    try {
      const driver = await NbdDriver.open(server.uri);
      const bufs = Array.from({ length: 8 }, () => Buffer.alloc(65536));
      await Promise.all(bufs.map((b, i) => driver.read(i * 65536, b)));
      for (const [i, b] of bufs.entries()) assert.deepEqual(b, Buffer.alloc(65536, i));
      await driver.write(0, Buffer.alloc(512, 1), { fua: true });
      await driver.writeZeroes(0, 4096, { noFallback: true });
      await driver.writeZeroes(0, 4096, { mayUnmap: true });
      await driver.discard(0, 4096);
      await driver.flush();
      await driver.close();
      await driver.close();
      const sent = server.requests.slice(8).map((r) => [r.type, r.flags]);
      assert.deepEqual(sent, [
        [CMD.WRITE, CMD_FLAG.FUA],
        [CMD.WRITE_ZEROES, CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO],
        [CMD.WRITE_ZEROES, 0],
        [CMD.TRIM, 0],
        [CMD.FLUSH, 0],
        [CMD.DISC, 0],
      ]);
    } finally {
      await server.close();
    }
  });

  it('emulates what the server lacks: zero bytes for WRITE_ZEROES, ENOTSUP for a fast zero', async () => {
    const server = await startFakeServer({ flags: TF.SEND_FLUSH, onRequest: (r, c) => c.send(simpleReply(r.cookie)) });
    try {
      const driver = await NbdDriver.open(server.uri);
      await assert.rejects(
        driver.writeZeroes(0, 4096, { noFallback: true }),
        (err: unknown) => err instanceof VdiskError && err.code === 'ENOTSUP',
      );
      await driver.writeZeroes(0, 3 * MiB);
      await driver.discard(0, 4096);
      await driver.close();
      const writes = server.requests.filter((r) => r.type === CMD.WRITE);
      assert.equal(
        writes.reduce((n, r) => n + r.length, 0),
        3 * MiB,
      );
      assert.equal(
        writes.every((r) => r.payload!.every((b) => b === 0)),
        true,
      );
      assert.equal(
        server.requests.some((r) => r.type === CMD.TRIM || r.type === CMD.WRITE_ZEROES),
        false,
      );
    } finally {
      await server.close();
    }
  });

  it('talks to old servers: simple replies without structured ones, EXPORT_NAME without GO', async () => {
    const server = await startFakeServer({
      structured: false,
      size: 2 * MiB,
      answerOption: (option, c) => {
        if (option !== OPT.GO) return false;
        c.send(encodeOptionReply(option, REP.ERR_UNSUP));
        return true;
      },
      onRequest: (r, c) =>
        c.send(
          r.type === CMD.READ
            ? simpleReply(r.cookie, 0, Buffer.alloc(r.length, r.offset >> 16))
            : simpleReply(r.cookie),
        ),
    });
    try {
      const image = await openImage(server.uri, { format: 'raw' });
      assert.equal(image.length, 2 * MiB);
      assert.equal(image.describe().capabilities.blockStatus, false);
      assert.deepEqual(await image.read(3 * 65536, 4096), Buffer.alloc(4096, 3));
      const extent = await image.blockStatus(0, 2 * MiB);
      assert.deepEqual([extent.length, extent.data], [2 * MiB, true]);
      await image.close();
      assert.equal(
        server.requests.some((r) => r.type === CMD.BLOCK_STATUS),
        false,
      );
    } finally {
      await server.close();
    }
  });

  it('reconnects within the reconnect delay and sends the interrupted request again', async () => {
    for (const delay of [0, 5]) {
      const server = await startFakeServer({
        onRequest: (r, c) => {
          // The first connection dies on its first request; the next one answers.
          if (c.index === 0) return c.socket.destroy();
          c.send(dataChunk(r.cookie, r.offset, Buffer.alloc(r.length, 0x77), true));
        },
      });
      try {
        const driver = await NbdDriver.open(server.uri, { reconnectDelay: delay, readOnly: true });
        const buf = Buffer.alloc(4096);
        if (delay === 0) {
          await assert.rejects(driver.read(0, buf), (err: unknown) => err instanceof VdiskError && err.code === 'EIO');
        } else {
          await driver.read(0, buf);
          assert.deepEqual(buf, Buffer.alloc(4096, 0x77));
          assert.equal(server.connections(), 2);
        }
        await driver.close();
      } finally {
        await server.close();
      }
    }
  });

  it('reads a local qcow2 overlay on a remote raw base', async () => {
    await withTempDir(async (dir) => {
      await served(dir, { format: 'raw' }, async (uri) => {
        const base = await openImage(uri, { format: 'raw' });
        await base.write(0, Buffer.alloc(MiB, 0xba));
        await base.close();
        const overlay = path.join(dir, 'overlay.qcow2');
        await createImage({ filename: overlay, format: 'qcow2', options: { backing_file: uri, backing_fmt: 'raw' } });
        const top = await openImage(overlay);
        await top.write(4096, Buffer.alloc(4096, 0x70));
        const head = await top.read(0, 3 * 4096);
        assert.deepEqual(
          head,
          Buffer.concat([Buffer.alloc(4096, 0xba), Buffer.alloc(4096, 0x70), Buffer.alloc(4096, 0xba)]),
        );
        assert.equal(top.describe().backingChain[0]?.filename, uri.replace(':///?', '://?'));
        await top.close();
        await assert.rejects(
          openImage(overlay, { confineBacking: dir }),
          (err: unknown) => err instanceof VdiskError && err.code === 'EACCES' && /network export/.test(err.message),
        );
        const allowed = await openImage(overlay, { confineBacking: dir, allowBackingUris: [uri] });
        await allowed.close();
      });
    });
  });
});

describe('the NBD client and a server minimum block size', () => {
  it('sends a 4 KiB-minimum server only aligned requests, the data landing as written', async () => {
    const size = 1 * MiB;
    const stored = Buffer.alloc(size);
    const server = await startFakeServer({
      size,
      structured: false,
      blockSizes: { minimum: 4096, preferred: 65536, maximum: 65536 },
      onRequest: (r, c) => {
        if (r.type === CMD.READ) c.send(simpleReply(r.cookie, 0, stored.subarray(r.offset, r.offset + r.length)));
        else {
          if (r.type === CMD.WRITE) r.payload!.copy(stored, r.offset);
          if (r.type === CMD.WRITE_ZEROES) stored.fill(0, r.offset, r.offset + r.length);
          c.send(simpleReply(r.cookie));
        }
      },
    });
    try {
      const driver = await NbdDriver.open(server.uri);
      assert.equal(driver.alignment.request, 4096);
      const model = Buffer.alloc(size);
      const writes: Array<[number, Buffer]> = [
        [100, randomBytes(5000)],
        [70000, randomBytes(200000)],
        [4096, randomBytes(4096)],
      ];
      for (const [offset, data] of writes) {
        await driver.write(offset, data);
        data.copy(model, offset);
      }
      await driver.writeZeroes(3000, 9000);
      model.fill(0, 3000, 12000);
      await driver.discard(10, 100); // partial blocks: nothing to trim
      const back = Buffer.alloc(300001);
      await driver.read(99, back);
      assert.deepEqual(back, model.subarray(99, 99 + back.length));
      await driver.close();
      assert.deepEqual(stored, model);
      const sent = server.requests.filter((r) => r.type !== CMD.DISC && r.type !== CMD.FLUSH);
      assert.ok(sent.length > 0);
      for (const r of sent) {
        assert.equal(r.offset % 4096, 0, `request ${r.type} at ${r.offset}`);
        assert.equal(r.length % 4096, 0, `request ${r.type} of ${r.length}`);
        assert.ok(r.length <= 65536, `request ${r.type} of ${r.length} above the maximum`);
      }
      assert.equal(
        sent.some((r) => r.type === CMD.TRIM),
        false,
      );
    } finally {
      await server.close();
    }
  });

  it('refuses block sizes the protocol does not allow, with one clear error', async () => {
    for (const blockSizes of [
      { minimum: 3, preferred: 4096, maximum: 65536 },
      { minimum: 4096, preferred: 512, maximum: 65536 },
      { minimum: 4096, preferred: 4096, maximum: 6000 },
    ]) {
      const server = await startFakeServer({ blockSizes });
      try {
        await assert.rejects(
          NbdDriver.open(server.uri),
          (err: unknown) =>
            err instanceof VdiskError && err.code === 'EPROTO' && /invalid block sizes/.test(err.message),
        );
      } finally {
        await server.close();
      }
    }
  });
});
