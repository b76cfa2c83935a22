/**
 * Killed processes: `vdisk serve` killed with SIGKILL at random moments under a client's
 * write/flush workload, restarted, and checked (lib/kill.ts), in raw and qcow2, every cache
 * mode, lazy refcounts, small clusters and metadata preallocation, with vdisk's wire client and
 * with qemu-io. `npm test` makes 200 kills in all; `--long` 4000 (VDISK_KILLS sets the number).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasCommand } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { config, LEVEL } from './lib/config.js';
import { type KillConfig, runKills } from './lib/kill.js';

/** Each configuration and its share of the kills. */
const CONFIGS: Array<KillConfig & { share: number }> = [
  { name: 'raw-writeback', format: 'raw', cache: 'writeback', client: 'wire', share: 20 },
  { name: 'raw-none', format: 'raw', cache: 'none', client: 'wire', share: 15 },
  { name: 'qcow2-writeback', format: 'qcow2', cache: 'writeback', client: 'wire', share: 27 },
  { name: 'qcow2-writethrough', format: 'qcow2', cache: 'writethrough', client: 'wire', share: 20 },
  { name: 'qcow2-none', format: 'qcow2', cache: 'none', client: 'wire', share: 20 },
  { name: 'qcow2-directsync', format: 'qcow2', cache: 'directsync', client: 'wire', share: 10 },
  { name: 'qcow2-unsafe', format: 'qcow2', cache: 'unsafe', client: 'wire', share: 15 },
  {
    name: 'qcow2-lazy',
    format: 'qcow2',
    cache: 'writeback',
    client: 'wire',
    options: { lazy_refcounts: true },
    share: 20,
  },
  {
    name: 'qcow2-4k-clusters',
    format: 'qcow2',
    cache: 'writeback',
    client: 'wire',
    options: { cluster_size: 4096 },
    share: 20,
  },
  {
    name: 'qcow2-metadata',
    format: 'qcow2',
    cache: 'writeback',
    client: 'wire',
    options: { preallocation: 'metadata' },
    share: 10,
  },
  { name: 'qcow2-qemu-io', format: 'qcow2', cache: 'writeback', client: 'qemu-io', share: 15 },
  { name: 'raw-qemu-io', format: 'raw', cache: 'writethrough', client: 'qemu-io', share: 8 },
];

const totalShare = CONFIGS.reduce((n, c) => n + c.share, 0);
const qemu = hasCommand('qemu-img') && hasCommand('qemu-io');

describe(`killed processes: vdisk serve under SIGKILL (${LEVEL})`, () => {
  const totals = { kills: 0, sent: 0, answered: 0, flushes: 0, leaky: 0, qemuChecks: 0 };
  CONFIGS.forEach((c, i) => {
    const kills = Math.max(1, Math.round((config.kills * c.share) / totalShare));
    const skip = qemu ? false : 'qemu-img and qemu-io are not installed (apt-get install qemu-utils)';
    it(`${c.name}: ${kills} kills`, { skip }, async (t) => {
      await withTempDir(async (dir) => {
        const r = await runKills(c, kills, config.seed + i * 7717, dir);
        totals.kills += r.kills;
        totals.sent += r.sent;
        totals.answered += r.answered;
        totals.flushes += r.flushes;
        totals.leaky += r.leaky;
        totals.qemuChecks += r.qemuChecks;
        t.diagnostic(
          `${r.label}: ${r.kills} kills, ${r.sent} requests sent, ${r.answered} answered, ` +
            `${r.flushes} flushes answered, ${r.leaky} states with leaks, ${r.qemuChecks} qemu-img checks, ${r.ms} ms`,
        );
        assert.deepEqual(r.failures, [], r.failures.join('\n'));
        assert.equal(r.kills, kills, 'every round ended in a kill');
        assert.ok(r.answered > 0, 'the client got answers before the kills');
      });
    });
  });
  it('counts', (t) => {
    t.diagnostic(`kill family: ${JSON.stringify(totals)}`);
    console.log(`[reliability] kills: ${JSON.stringify(totals)}`);
  });
});
