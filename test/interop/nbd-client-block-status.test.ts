/**
 * What a server tells the client about its export beyond size and flags: the block sizes of
 * NBD_INFO_BLOCK_SIZE (nbdkit's blocksize-policy filter refuses every request not aligned to its
 * minimum or above its maximum, so any misaligned request fails these tests) and the chain behind
 * the export (qemu-nbd -A and vdisk serve -A offer qemu:allocation-depth). qemu-io is the oracle
 * for data, `qemu-img map` of the same chain opened locally for depths.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startNbdkit, startQemuNbd, startVdiskServe } from '../helpers/nbd-serve.js';
import { needTools as need, runOk, vdiskOk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const io = (commands: string[]) => commands.flatMap((c) => ['-c', c]);

function verified(out: string): void {
  assert.doesNotMatch(out, /Pattern verification failed|error|failed/i, out);
}

/** Unaligned, sub-block, multi-block and above-maximum requests. */
const WRITES = [
  'write -P 0xab 100 5000',
  'write -P 0xcd 6000 3M',
  'write -z 4000 10',
  'write -z 5000 70000',
  'write -P 0x5a 8387908 700',
];
const READS = [
  'read -P 0 0 100',
  'read -P 0xab 100 3900',
  'read -P 0 4000 10',
  'read -P 0xab 4010 990',
  'read -P 0 5000 70000',
  'read -P 0xcd 75000 3070000',
  'read -P 0xcd 3145000 6000',
  'read -P 0 3151728 1000',
  'read -P 0x5a 8387908 700',
];

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
}

/**
 * What the chain says about each range, whoever reads it: host offsets differ (the export's own
 * over NBD) and so does the depth of an absent range (a server does not say how deep its chain is).
 */
function chainView(json: string): MapEntry[] {
  return (JSON.parse(json) as MapEntry[]).map(({ start, length, depth, present, zero, data }) => ({
    start,
    length,
    depth: present ? depth : -1,
    present,
    zero,
    data,
  }));
}

/** base.qcow2 <- mid.qcow2 <- top.qcow2, with data, zeros and holes at each level. */
async function makeChain(dir: string): Promise<string> {
  const base = path.join(dir, 'base.qcow2');
  const mid = path.join(dir, 'mid.qcow2');
  const top = path.join(dir, 'top.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
  await runOk('qemu-io', ['-f', 'qcow2', ...io(['write -P 1 0 1M', 'write -P 1 6M 512k']), base]);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid]);
  await runOk('qemu-io', ['-f', 'qcow2', ...io(['write -P 2 512k 1M', 'write -z 3M 64k']), mid]);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top]);
  await runOk('qemu-io', ['-f', 'qcow2', ...io(['write -P 3 2M 64k', 'write -z 6M 64k']), top]);
  return top;
}

describe('the NBD client and a server minimum block size', () => {
  it('aligns and splits every request for nbdkit blocksize-policy, as qemu-io reads it back', async (t) => {
    if (!need(t, 'nbdkit', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const policy = [
        'blocksize-minimum=4096',
        'blocksize-preferred=65536',
        'blocksize-maximum=1M',
        'blocksize-error-policy=error',
      ];
      const server = await startNbdkit(['--filter=blocksize-policy', 'memory', '8M', ...policy], path.join(dir, 'k'));
      try {
        const uri = server.uri;
        verified(await vdiskOk(['io', '-f', 'raw', ...io([...WRITES, ...READS]), uri]));
        verified(await runOk('qemu-io', ['-f', 'raw', ...io(READS), uri]));
        // And what qemu-io writes unaligned, vdisk reads unaligned.
        await runOk('qemu-io', ['-f', 'raw', ...io(['write -P 0x77 1048577 3333']), uri]);
        verified(await vdiskOk(['io', '-f', 'raw', ...io(['read -P 0x77 1048577 3333', 'read -P 0xcd 1M 1']), uri]));
        assert.equal(
          await vdiskOk(['map', '--output=json', uri]),
          await runOk('qemu-img', ['map', '--output=json', uri]),
        );
      } finally {
        await server.stop();
      }
    });
  });

  it("writes through vdisk serve under cache=none (a minimum block size: the file's sector) what qemu-io reads", async (t) => {
    if (!need(t, 'qemu-io', 'qemu-img')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.raw');
      await runOk('qemu-img', ['create', '-q', '-f', 'raw', image, '8M']);
      const server = await startVdiskServe(['-f', 'raw', '-t', '--cache=none', '-k', path.join(dir, 'v'), image]);
      try {
        verified(await vdiskOk(['io', '-f', 'raw', ...io(WRITES), server.uri]));
      } finally {
        await server.stop();
      }
      verified(await runOk('qemu-io', ['-f', 'raw', ...io(READS), image]));
    });
  });
});

describe('the NBD client and qemu:allocation-depth', () => {
  it('maps a chain served by qemu-nbd -A with the depths qemu-img map gives the chain itself', async (t) => {
    if (!need(t, 'qemu-nbd', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const top = await makeChain(dir);
      const expected = chainView(await runOk('qemu-img', ['map', '--output=json', top]));
      assert.ok(expected.some((e) => e.depth === 2) && expected.some((e) => !e.present));
      const server = await startQemuNbd(['-A', '-r', '-f', 'qcow2', '-t', top], { socket: path.join(dir, 's') });
      try {
        assert.deepEqual(chainView(await vdiskOk(['map', '--output=json', server.uri])), expected);
        const overlay = path.join(dir, 'overlay.qcow2');
        const local = path.join(dir, 'local.qcow2');
        // A local overlay on the remote chain maps as an overlay on the local chain does.
        await vdiskOk(['create', '-q', '-f', 'qcow2', '-b', server.uri, '-F', 'raw', overlay]);
        await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', top, '-F', 'qcow2', local]);
        for (const image of [overlay, local]) {
          await runOk('qemu-io', ['-f', 'qcow2', ...io(['write -P 9 5M 64k']), image]);
        }
        assert.deepEqual(
          chainView(await vdiskOk(['map', '--output=json', overlay])),
          chainView(await runOk('qemu-img', ['map', '--output=json', '-U', local])),
        );
      } finally {
        await server.stop();
      }
      // Without -A there is no depth to read: the export is one layer, as qemu-img shows it.
      const plain = await startQemuNbd(['-r', '-f', 'qcow2', '-t', top], { socket: path.join(dir, 'p') });
      try {
        assert.equal(
          await vdiskOk(['map', '--output=json', plain.uri]),
          await runOk('qemu-img', ['map', '--output=json', plain.uri]),
        );
      } finally {
        await plain.stop();
      }
    });
  });

  it('reads the same depths from vdisk serve -A', async (t) => {
    if (!need(t, 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const top = await makeChain(dir);
      const expected = chainView(await runOk('qemu-img', ['map', '--output=json', top]));
      const server = await startVdiskServe(['-A', '-r', '-f', 'qcow2', '-t', '-k', path.join(dir, 'v'), top]);
      try {
        assert.deepEqual(chainView(await vdiskOk(['map', '--output=json', server.uri])), expected);
      } finally {
        await server.stop();
      }
    });
  });
});
