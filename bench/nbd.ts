/**
 * `npm run bench:nbd [-- --quick]`: fio's nbd engine against `vdisk serve` and `qemu-nbd`,
 * serving the same image file with the same format and cache mode, in one run, alternating
 * between the two servers (q, v, q, v, …) so that drift in the machine's load or page cache
 * hits both alike. Prints the median IOPS of each and the ratio vdisk / qemu-nbd.
 *
 * Workloads: 4k random reads at queue depth 1 and 32; 4k random writes at queue depth 32 into
 * an allocated image and (qcow2) into a fresh unallocated one; 1M sequential reads and writes.
 * Matrix: raw and qcow2, cache=none and cache=writeback.
 *
 * Options: --quick (short runs, small image), --runtime S, --rounds N, --size MiB, --dir DIR,
 * --only SUBSTRING (workload/format/cache filter), --vdisk-env K=V (extra environment for vdisk).
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fio } from './lib/fio.js';
import { fmt, geometricMean, MiB, machineLine, median, requireTools, sh, table, writeRandomFile } from './lib/run.js';
import { startServer } from './lib/servers.js';
import { type SummaryLine, takeSummaryPath, writeSummary } from './lib/summary.js';

interface Options {
  quick: boolean;
  runtime: number;
  rounds: number;
  sizeMiB: number;
  dir: string | undefined;
  only: string[];
  vdiskEnv: Record<string, string>;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { quick: false, runtime: 0, rounds: 0, sizeMiB: 0, dir: undefined, only: [], vdiskEnv: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--runtime') o.runtime = Number(next());
    else if (a === '--rounds') o.rounds = Number(next());
    else if (a === '--size') o.sizeMiB = Number(next());
    else if (a === '--dir') o.dir = next();
    else if (a === '--only') o.only.push(next());
    else if (a === '--vdisk-env') {
      const [k, ...v] = next().split('=');
      o.vdiskEnv[k!] = v.join('=');
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: node dist/bench/nbd.js [--quick] [--runtime S] [--rounds N] [--size MiB] [--dir DIR] [--only TEXT] [--vdisk-env K=V]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (!o.runtime) o.runtime = o.quick ? 2 : 8;
  if (!o.rounds) o.rounds = o.quick ? 1 : 3;
  if (!o.sizeMiB) o.sizeMiB = o.quick ? 256 : 1024;
  return o;
}

interface Workload {
  name: string;
  rw: string;
  bs: string;
  iodepth: number;
  /** Which image the workload runs on. */
  image: 'allocated' | 'unallocated';
  /** The writes need a fresh image before every run (so that both servers start from the same state). */
  fresh?: boolean;
}

const WORKLOADS: Workload[] = [
  { name: '4k randread QD1', rw: 'randread', bs: '4k', iodepth: 1, image: 'allocated' },
  { name: '4k randread QD32', rw: 'randread', bs: '4k', iodepth: 32, image: 'allocated' },
  { name: '4k randwrite QD32 allocated', rw: 'randwrite', bs: '4k', iodepth: 32, image: 'allocated' },
  { name: '4k randwrite QD32 unallocated', rw: 'randwrite', bs: '4k', iodepth: 32, image: 'unallocated', fresh: true },
  { name: '1M seq read', rw: 'read', bs: '1M', iodepth: 4, image: 'allocated' },
  { name: '1M seq write', rw: 'write', bs: '1M', iodepth: 4, image: 'allocated' },
];

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const summaryPath = takeSummaryPath(argv);
  const o = parseOptions(argv);
  const summary: SummaryLine[] = [];
  requireTools('bench:nbd', ['fio', 'qemu-nbd', 'qemu-img']);
  const dir = await mkdtemp(path.join(o.dir ?? os.tmpdir(), 'vdisk-bench-nbd-'));
  const size = o.sizeMiB * MiB;
  process.stdout.write(
    `vdisk serve vs qemu-nbd, fio --ioengine=nbd over a Unix socket; image ${o.sizeMiB} MiB in ${dir}\n` +
      `runtime ${o.runtime}s per run, ${o.rounds} run(s) per server, alternating; median IOPS\n` +
      machineLine() +
      `${Object.keys(o.vdiskEnv).length ? `, vdisk env ${JSON.stringify(o.vdiskEnv)}` : ''}\n\n`,
  );
  const rows: string[][] = [['workload', 'format', 'cache', 'qemu-nbd', 'vdisk', 'vdisk/qemu']];
  const ratios: number[] = [];
  try {
    const rawData = path.join(dir, 'data.raw');
    writeRandomFile(rawData, size);
    for (const format of ['raw', 'qcow2'] as const) {
      const allocated = path.join(dir, `allocated.${format}`);
      if (format === 'raw') sh('cp', ['--sparse=never', rawData, allocated]);
      else sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawData, allocated]);
      for (const cache of ['none', 'writeback'] as const) {
        for (const w of WORKLOADS) {
          if (w.image === 'unallocated' && format === 'raw') continue;
          const label = `${w.name} ${format} ${cache}`;
          if (o.only.length && !o.only.some((f) => label.includes(f))) continue;
          const results: Record<'qemu-nbd' | 'vdisk', number[]> = { 'qemu-nbd': [], vdisk: [] };
          for (let round = 0; round < o.rounds; round++) {
            for (const which of ['qemu-nbd', 'vdisk'] as const) {
              let image = allocated;
              if (w.image === 'unallocated') {
                image = path.join(dir, `fresh.${format}`);
                sh('qemu-img', ['create', '-q', '-f', format, image, String(size)]);
              }
              // Reads through the page cache start warm for both servers.
              if (cache === 'writeback' && w.rw.includes('read')) spawnSync('cat', [image], { stdio: 'ignore' });
              const socket = path.join(dir, `${which}.sock`);
              const server = await startServer(
                which,
                image,
                format,
                cache,
                socket,
                which === 'vdisk' ? o.vdiskEnv : {},
              );
              try {
                const job = { rw: w.rw, bs: w.bs, iodepth: w.iodepth, runtime: o.runtime, ramp: 1, sizeMiB: o.sizeMiB };
                results[which].push(fio({ uri: server.uri }, job).iops);
              } finally {
                await server.stop();
              }
            }
          }
          const q = median(results['qemu-nbd']);
          const v = median(results.vdisk);
          const ratio = v / q;
          ratios.push(ratio);
          summary.push({ bench: 'nbd', measure: label, value: ratio, atLeast: w.image === 'unallocated' ? 1.5 : 1 });
          rows.push([w.name, format, cache, fmt(q), fmt(v), ratio.toFixed(2)]);
          process.stdout.write(
            `${label.padEnd(44)} qemu-nbd ${fmt(q).padStart(7)}  vdisk ${fmt(v).padStart(7)}  ratio ${ratio.toFixed(2)}` +
              `   (runs: q ${results['qemu-nbd'].map(fmt).join('/')}, v ${results.vdisk.map(fmt).join('/')})\n`,
          );
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`\n${table(rows)}\n`);
  if (ratios.length) process.stdout.write(`\ngeometric mean of vdisk/qemu-nbd: ${geometricMean(ratios).toFixed(2)}\n`);
  if (ratios.length)
    summary.push({ bench: 'nbd', measure: 'geometric mean vdisk/qemu-nbd', value: geometricMean(ratios) });
  writeSummary(summaryPath, summary);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:nbd: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
