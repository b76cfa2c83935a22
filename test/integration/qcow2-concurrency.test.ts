/**
 * Many requests in flight on one qcow2 image, as an NBD client sends them: writes into the same
 * unallocated clusters must not allocate a cluster twice, and reads racing an allocation see the
 * old or the new data, never anything else.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { openImage } from '../../src/engine/open.js';
import { createImage } from '../../src/tools/create.js';
import { hasTool, run } from '../helpers/tools.js';

const SLOT = 4096;

function slotData(slot: number): Buffer {
  const buf = Buffer.alloc(SLOT, (slot % 250) + 1);
  buf.writeUInt32BE(slot, 0);
  return buf;
}

for (const clusterSize of [65536, 4096]) {
  it(`concurrent writes and reads into fresh clusters (cluster ${clusterSize})`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vdisk-conc-'));
    const image = join(dir, 'c.qcow2');
    try {
      const slots = 1024;
      await createImage({
        filename: image,
        format: 'qcow2',
        size: slots * SLOT,
        options: `cluster_size=${clusterSize}`,
      });
      const backend = await openImage(image, { format: 'qcow2' });
      const order = Array.from({ length: slots }, (_, i) => i).sort(() => Math.random() - 0.5);
      const seen: string[] = [];
      const ops: Promise<void>[] = [];
      for (const slot of order) {
        ops.push(backend.write(slot * SLOT, slotData(slot)));
        const probe = order[(slot * 7) % slots]!;
        ops.push(
          backend.read(probe * SLOT, SLOT).then((got) => {
            if (!got.equals(Buffer.alloc(SLOT)) && !got.equals(slotData(probe))) seen.push(`slot ${probe}`);
          }),
        );
      }
      await Promise.all(ops);
      assert.deepEqual(seen, [], 'reads saw only old or new data');
      for (let slot = 0; slot < slots; slot++) {
        assert.ok((await backend.read(slot * SLOT, SLOT)).equals(slotData(slot)), `slot ${slot} reads back`);
      }
      await backend.close();
      if (hasTool('qemu-img')) {
        const check = run('qemu-img', ['check', image]);
        assert.equal(check.status, 0, check.stdout + check.stderr);
        // Every guest cluster is allocated exactly once: no cluster leaked by a double allocation.
        assert.match(
          check.stdout,
          new RegExp(`${(slots * SLOT) / clusterSize}/${(slots * SLOT) / clusterSize} = 100.00% allocated`),
        );
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
