/**
 * `npm run bench:rss [-- --quick]`: the peak resident memory of `vdisk serve` on a 1 TiB qcow2
 * under random 4 KiB writes at queue depth 32 (15 s, 5 s with --quick), against the target:
 * the L2 and refcount caches are bounded by default, as QEMU's are, so memory does not grow
 * with the image. Prints qemu-nbd's figure beside it.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fio } from './lib/fio.js';
import { machineLine, requireTools, sh, table } from './lib/run.js';
import { type ServerName, startServer } from './lib/servers.js';
import { takeSummaryPath, writeSummary } from './lib/summary.js';

const TARGET_MIB = 150;

/** VmHWM of a live process, in MiB. */
function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
  return kib / 1024;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const summaryPath = takeSummaryPath(argv);
  const seconds = argv.includes('--quick') ? 5 : 15;
  requireTools('bench:rss', ['fio', 'qemu-nbd', 'qemu-img']);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-bench-rss-'));
  const peaks: Partial<Record<ServerName, number>> = {};
  try {
    for (const which of ['vdisk', 'qemu-nbd'] as const) {
      const image = path.join(dir, 'big.qcow2');
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1T']);
      const server = await startServer(which, image, 'qcow2', 'writeback', path.join(dir, `${which}.sock`));
      try {
        fio(
          { uri: server.uri },
          { rw: 'randwrite', bs: '4k', iodepth: 32, runtime: seconds, ramp: 0, sizeMiB: 1 << 20 },
        );
        peaks[which] = peakRssMiB(server.pid);
      } finally {
        await server.stop();
        await rm(image, { force: true });
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const v = peaks.vdisk!;
  const q = peaks['qemu-nbd']!;
  process.stdout.write(
    `peak RSS serving a 1 TiB qcow2, random 4 KiB writes at queue depth 32 for ${seconds} s; ${machineLine()}\n` +
      `${table([
        ['server', 'peak RSS (MiB)'],
        ['vdisk', v.toFixed(0)],
        ['qemu-nbd', q.toFixed(0)],
      ])}\n`,
  );
  writeSummary(summaryPath, [
    { bench: 'rss', measure: 'vdisk serve peak RSS, MiB (1 TiB qcow2)', value: v, atMost: TARGET_MIB },
  ]);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:rss: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
