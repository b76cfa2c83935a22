/**
 * `npm run bench:engine [-- --quick]`: how close vdisk's own I/O path comes to the disk. The
 * same raw file, cache=none (O_DIRECT), read through vdisk's API (openImage, read with N
 * requests in flight) and by fio's io_uring engine, alternating, with and without libuv's
 * io_uring (UV_USE_IO_URING=1, which libuv reads only when Node starts: the vdisk side runs in
 * a child process). Workloads: 4 KiB random reads at queue depth 32 and 1, 1 MiB sequential
 * reads at queue depth 4.
 *
 * Options: --quick, --runtime S, --rounds N, --size MiB, --dir DIR.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openImage } from '../src/index.js';
import { fio } from './lib/fio.js';
import { fmt, MiB, machineLine, median, requireTools, table, writeRandomFile } from './lib/run.js';
import { type SummaryLine, takeSummaryPath, writeSummary } from './lib/summary.js';

interface Workload {
  name: string;
  bs: number;
  iodepth: number;
  sequential: boolean;
}

const WORKLOADS: Workload[] = [
  { name: '4k randread QD32', bs: 4096, iodepth: 32, sequential: false },
  { name: '4k randread QD1', bs: 4096, iodepth: 1, sequential: false },
  { name: '1M seqread QD4', bs: MiB, iodepth: 4, sequential: true },
];

/** The vdisk side, in this process: reads for `seconds` with `iodepth` in flight; prints IOPS. */
async function vdiskReads(file: string, w: Workload, seconds: number): Promise<number> {
  const image = await openImage(file, { format: 'raw', cache: 'none', readOnly: true });
  const blocks = Math.floor(image.length / w.bs);
  let next = 0;
  let done = 0;
  const deadline = Date.now() + seconds * 1000;
  const warm = Date.now() + 500;
  let counting = false;
  let started = 0;
  const worker = async () => {
    const buf = Buffer.alloc(w.bs);
    while (Date.now() < deadline) {
      const block = w.sequential ? next++ % blocks : Math.floor(Math.random() * blocks);
      await image.readInto(block * w.bs, buf);
      if (!counting && Date.now() >= warm) {
        counting = true;
        started = Date.now();
      }
      if (counting) done++;
    }
  };
  await Promise.all(Array.from({ length: w.iodepth }, worker));
  await image.close();
  return done / ((Date.now() - started) / 1000);
}

function vdiskInChild(file: string, w: Workload, seconds: number, ioUring: boolean): number {
  // As docs/api.md advises programs that keep many requests in flight (the CLI does the same).
  const env = { UV_THREADPOOL_SIZE: '32', ...process.env, UV_USE_IO_URING: ioUring ? '1' : '0' };
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', file, w.name, String(seconds)], {
    env,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`vdisk side failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    const w = WORKLOADS.find((x) => x.name === argv[2])!;
    process.stdout.write(`${await vdiskReads(argv[1]!, w, Number(argv[3]))}\n`);
    return;
  }
  const summaryPath = takeSummaryPath(argv);
  const summary: SummaryLine[] = [];
  const quick = argv.includes('--quick');
  const value = (name: string, fallback: number) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : fallback;
  };
  const runtime = value('--runtime', quick ? 2 : 5);
  const rounds = value('--rounds', quick ? 1 : 3);
  const sizeMiB = value('--size', quick ? 512 : 2048);
  const dirIndex = argv.indexOf('--dir');
  requireTools('bench:engine', ['fio']);
  const dir = await mkdtemp(path.join(dirIndex >= 0 ? argv[dirIndex + 1]! : os.tmpdir(), 'vdisk-bench-engine-'));
  process.stdout.write(
    `vdisk's API (cache=none) vs fio io_uring (O_DIRECT) on one raw file of ${sizeMiB} MiB in ${dir}\n` +
      `${runtime} s per run, ${rounds} round(s), alternating; ${machineLine()}\n\n`,
  );
  const rows = [['workload', 'fio io_uring', 'vdisk (thread pool)', 'ratio', 'vdisk (io_uring)', 'ratio']];
  try {
    const file = path.join(dir, 'disk.raw');
    writeRandomFile(file, sizeMiB * MiB);
    for (const w of WORKLOADS) {
      const runs = { fio: [] as number[], pool: [] as number[], uring: [] as number[] };
      for (let round = 0; round < rounds; round++) {
        runs.fio.push(
          fio(
            { file, engine: 'io_uring', direct: true },
            {
              rw: w.sequential ? 'read' : 'randread',
              bs: String(w.bs),
              iodepth: w.iodepth,
              runtime,
              ramp: 1,
              sizeMiB,
            },
          ).iops,
        );
        runs.pool.push(vdiskInChild(file, w, runtime, false));
        runs.uring.push(vdiskInChild(file, w, runtime, true));
      }
      const f = median(runs.fio);
      const p = median(runs.pool);
      const u = median(runs.uring);
      rows.push([w.name, fmt(f), fmt(p), (p / f).toFixed(2), fmt(u), (u / f).toFixed(2)]);
      const target = w.sequential ? 0.9 : w.iodepth > 1 ? 0.6 : undefined;
      summary.push({ bench: 'engine', measure: `${w.name} vdisk API / fio io_uring`, value: p / f, atLeast: target });
      process.stdout.write(`${w.name.padEnd(18)} fio ${fmt(f)}  vdisk pool ${fmt(p)}  vdisk io_uring ${fmt(u)}\n`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`\n${table(rows)}\n`);
  writeSummary(summaryPath, summary);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:engine: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
