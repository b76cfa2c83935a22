/**
 * The qemu:dirty-bitmap:NAME contexts of vdisk serve -B at the wire: ids from 2 in export order,
 * one BLOCK_STATUS chunk per selected context after base:allocation and qemu:allocation-depth
 * (the last one marked done), REQ_ONE, and the map following the client's own writes.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { changeBitmap, createImage, imageInfo } from '../../src/index.js';
import { CMD, CMD_FLAG } from '../../src/nbd-wire/protocol.js';
import { serveImage } from '../../src/tools/serve.js';
import { RawClient } from '../helpers/nbd-client.js';
import { withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

function decode(p: Buffer): { id: number; extents: [number, number][] } {
  const extents: [number, number][] = [];
  for (let off = 4; off < p.length; off += 8) extents.push([p.readUInt32BE(off), p.readUInt32BE(off + 4)]);
  return { id: p.readUInt32BE(0), extents };
}

describe('qemu:dirty-bitmap contexts', () => {
  it('are numbered from 2, answered after the other contexts, and follow writes', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await createImage({ filename: image, format: 'qcow2', size: 4 * MiB });
      await changeBitmap(image, 'b', { actions: [{ op: 'add' }], granularity: 65536 });
      await changeBitmap(image, 'c', { actions: [{ op: 'add' }], granularity: 512 });
      const h = await serveImage({
        filename: image,
        format: 'qcow2',
        socket: path.join(dir, 'nbd.sock'),
        persistent: true,
        allocationDepth: true,
        bitmaps: ['b', 'c'],
      });
      try {
        const c = await RawClient.connect(h.address);
        const { contextIds } = await c.handshake({
          contexts: ['qemu:dirty-bitmap:c', 'base:allocation', 'qemu:dirty-bitmap:b', 'qemu:dirty-bitmap:x'],
        });
        assert.deepEqual(
          [...contextIds.entries()],
          [
            ['base:allocation', 0],
            ['qemu:dirty-bitmap:b', 2],
            ['qemu:dirty-bitmap:c', 3],
          ],
        );
        assert.equal(await c.write(64 * 1024 + 512, Buffer.alloc(1024, 1)), 0);
        c.request(CMD.BLOCK_STATUS, 5, 0, 4 * MiB);
        const chunks = (await c.structuredReply()).map((r) => ({ ...decode(r.payload), done: r.flags & 1 }));
        assert.deepEqual(
          chunks.map((r) => [r.id, r.done]),
          [
            [0, 0],
            [2, 0],
            [3, 1],
          ],
        );
        assert.deepEqual(chunks[1]!.extents, [
          [65536, 0],
          [65536, 1],
          [4 * MiB - 131072, 0],
        ]);
        assert.deepEqual(chunks[2]!.extents, [
          [65536 + 512, 0],
          [1024, 1],
          [4 * MiB - 65536 - 1536, 0],
        ]);
        c.request(CMD.BLOCK_STATUS, 6, 4096, 4 * MiB - 4096, CMD_FLAG.REQ_ONE);
        const one = (await c.structuredReply()).map((r) => decode(r.payload));
        assert.deepEqual(one[1]!.extents, [[61440, 0]]);
        assert.deepEqual(one[2]!.extents, [[61440 + 512, 0]]);
        c.close();
      } finally {
        await h.close();
      }
      // Stored on close, not in use.
      const info = await imageInfo(image);
      assert.deepEqual(info.formatSpecific?.data.bitmaps, [
        { name: 'b', granularity: 65536, flags: ['auto'] },
        { name: 'c', granularity: 512, flags: ['auto'] },
      ]);
    });
  });

  it('refuses an unknown bitmap before serving', async () => {
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await createImage({ filename: image, format: 'qcow2', size: 4 * MiB });
      await assert.rejects(
        serveImage({ filename: image, format: 'qcow2', socket: path.join(dir, 's'), bitmaps: ['nope'] }),
        /Bitmap 'nope' is not found/,
      );
    });
  });
});
