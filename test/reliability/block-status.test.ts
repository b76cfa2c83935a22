/**
 * Block status does bounded work and never stalls the server. The hostile image of the issue
 * (384 KiB: 8192 L1 entries naming one L2 table, 4 TiB of data runs that never merge on the
 * host) is answered in whole 4 GiB BLOCK_STATUS requests with one lookup per chunk, and a turn
 * of the event loop between steps; two callers walking a fragmented image at once (as qemu-img
 * convert's REQ_ONE requests do) look each chunk up once; and over the wire, another client's
 * reads are answered while whole-disk BLOCK_STATUS requests are in progress. Work is counted
 * (lookups, requests, turns of the event loop), never timed.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LOOKUP_SUBCLUSTERS } from '../../src/format/qcow2/image/block-status.js';
import { Mapping } from '../../src/format/qcow2/image/mapping.js';
import { createImage, openImage } from '../../src/index.js';
import { queryExtents } from '../../src/nbd/extents.js';
import { CMD, CONTEXT_ID_BASE_ALLOCATION } from '../../src/nbd-wire/protocol.js';
import { RawClient } from '../helpers/nbd-client.js';
import { startVdiskServe } from '../helpers/nbd-serve.js';
import { withTempDir } from '../helpers/tmp.js';
import { sharedL2Image } from './lib/shared-l2-image.js';

const GiB = 1024 ** 3;
const CLUSTER = 64 * 1024;
/** The longest BLOCK_STATUS request without extended headers, cluster-aligned as clients send it. */
const REQUEST = 4 * GiB - CLUSTER;
const CHUNK = LOOKUP_SUBCLUSTERS * CLUSTER;

/** Counts mapping lookups (each decodes at most one chunk of L2 entries) while `fn` runs. */
async function countingLookups<T>(fn: () => Promise<T>): Promise<{ value: T; lookups: number }> {
  const original = Mapping.prototype.lookup;
  let lookups = 0;
  Mapping.prototype.lookup = function (this: Mapping, offset: number, length: number) {
    lookups++;
    return original.call(this, offset, length);
  };
  try {
    return { value: await fn(), lookups };
  } finally {
    Mapping.prototype.lookup = original;
  }
}

/** Turns of the event loop while `fn` runs. */
async function countingTurns<T>(fn: () => Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let done = false;
  const tick = () => {
    if (done) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    return { value: await fn(), turns };
  } finally {
    done = true;
  }
}

function covered(list: { lengths: number[] }): number {
  return list.lengths.reduce((a, b) => a + b, 0);
}

describe('block status: bounded work, no stalls', () => {
  it('an L1 table naming one L2 table 8192 times: whole requests, one lookup per chunk, turns between steps', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'shared-l2.qcow2');
      await sharedL2Image(file);
      const image = await openImage(file, { format: 'qcow2', readOnly: true });
      try {
        // A client walking the first 16 GiB as nbdinfo --map does: each request from where the last answer ended.
        const walk = await countingLookups(async () => {
          let requests = 0;
          for (let pos = 0; pos < 16 * GiB; requests++) {
            const { base } = await queryExtents(image, pos, REQUEST, false);
            assert.equal(covered(base), REQUEST, `request ${requests} answered only ${covered(base)} bytes`);
            assert.deepEqual(base.count, 1, 'all data: one extent');
            pos += covered(base);
          }
          return requests;
        });
        assert.equal(walk.value, Math.ceil((16 * GiB) / REQUEST));
        // Each chunk is looked up once, although none of its runs merge with the next on the host.
        const chunks = Math.ceil((walk.value * REQUEST) / CHUNK);
        assert.ok(walk.lookups <= chunks, `${walk.lookups} lookups for ${chunks} chunks`);

        // With every table in memory, the request still lets the event loop turn between steps.
        const again = await countingTurns(() => queryExtents(image, 0, REQUEST, false));
        assert.equal(covered(again.value.base), REQUEST);
        assert.ok(again.turns >= 8, `only ${again.turns} turns of the event loop during the request`);
      } finally {
        await image.close();
      }
    });
  });

  it('two walkers at once, one extent per call (qemu-img convert), look each chunk up once', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'fragmented.qcow2');
      const size = GiB;
      await createImage({ filename: file, format: 'qcow2', size });
      const writer = await openImage(file, { format: 'qcow2' });
      // 600 distinct clusters spread over the disk, so that no two are neighbours on both sides.
      for (let i = 0; i < 600; i++) {
        await writer.write(((i * 7919) % (size / CLUSTER)) * CLUSTER, Buffer.alloc(CLUSTER, 1 + (i % 255)));
      }
      await writer.close();
      const image = await openImage(file, { format: 'qcow2', readOnly: true });
      try {
        const single = async (from: number, to: number, out: string[]) => {
          for (let pos = from; pos < to; ) {
            const e = await image.blockStatus(pos, to - pos);
            out.push(describeExtent(e, pos));
            pos += e.length;
          }
        };
        const a: string[] = [];
        const b: string[] = [];
        const interleaved = await countingLookups(async () => {
          // Alternate calls between the two halves: a cache of one lookup would redo one per call.
          const half = size / 2;
          const walkers = [
            { pos: 0, end: half, out: a },
            { pos: half, end: size, out: b },
          ];
          while (walkers.some((w) => w.pos < w.end)) {
            for (const w of walkers) {
              if (w.pos >= w.end) continue;
              const e = await image.blockStatus(w.pos, w.end - w.pos);
              w.out.push(describeExtent(e, w.pos));
              w.pos += e.length;
            }
          }
        });
        assert.ok(a.length + b.length > 600, `${a.length + b.length} extents`);
        assert.ok(interleaved.lookups <= size / CHUNK, `${interleaved.lookups} lookups for ${size / CHUNK} chunks`);

        // Every run a lookup finds is handed out: a walk by blockStatusMany says the same.
        const many: string[] = [];
        for await (const e of image.extents()) many.push(describeExtent(e, e.offset));
        const reference: string[] = [];
        await single(0, size, reference);
        assert.deepEqual(merged(many), merged(reference));
        assert.deepEqual(merged([...a, ...b]), merged(reference));
      } finally {
        await image.close();
      }
    });
  });

  it("another client's reads are answered while whole-disk BLOCK_STATUS requests are in progress", async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'shared-l2.qcow2');
      await sharedL2Image(file);
      const socket = path.join(dir, 's.sock');
      const server = await startVdiskServe(['-f', 'qcow2', '-r', '-t', '-e', '0', '-k', socket, file]);
      try {
        const mapper = await RawClient.connect({ socket });
        const { contextIds } = await mapper.handshake({ contexts: ['base:allocation'] });
        assert.equal(contextIds.get('base:allocation'), CONTEXT_ID_BASE_ALLOCATION);
        const reader = await RawClient.connect({ socket });
        await reader.handshake({});
        let mapping = false;
        let readsDuring = 0;
        let stop = false;
        const reads = (async () => {
          while (!stop) {
            const started = mapping;
            const data = await reader.read(0, 4096);
            assert.equal(data[0], 0x5a);
            if (started && mapping) readsDuring++;
          }
        })();
        for (let i = 0; i < 4; i++) {
          mapping = true;
          mapper.request(CMD.BLOCK_STATUS, 100 + i, i * REQUEST, REQUEST);
          const chunks = await mapper.structuredReply();
          mapping = false;
          assert.ok(chunks.every((c) => c.type === 5));
          await new Promise((r) => setTimeout(r, 5));
        }
        stop = true;
        await reads;
        mapper.close();
        reader.close();
        assert.ok(readsDuring >= 2, `${readsDuring} reads answered during 4 whole-disk BLOCK_STATUS requests`);
      } finally {
        await server.stop();
      }
    });
  });
});

function describeExtent(
  e: { length: number; allocated: boolean; zero: boolean; data: boolean; hostOffset?: number },
  offset: number,
): string {
  return JSON.stringify([offset, e.length, e.allocated, e.zero, e.data, e.hostOffset ?? -1]);
}

/** Neighbouring extents that continue each other (same state, host offsets continuing) as one. */
function merged(list: string[]): string[] {
  const out: [number, number, boolean, boolean, boolean, number][] = [];
  for (const s of list) {
    const e = JSON.parse(s) as [number, number, boolean, boolean, boolean, number];
    const last = out[out.length - 1];
    if (
      last &&
      last[0] + last[1] === e[0] &&
      last[2] === e[2] &&
      last[3] === e[3] &&
      last[4] === e[4] &&
      (last[5] === -1 ? e[5] === -1 : last[5] + last[1] === e[5])
    ) {
      last[1] += e[1];
    } else out.push(e);
  }
  return out.map((e) => JSON.stringify(e));
}
