/**
 * `npm run bench:matrix [-- --quick]`: the cache mode × preallocation matrix at queue depth 1,
 * the workloads this project was born from, through fio's nbd engine: vdisk serve against
 * qemu-nbd (and, for raw, nbdkit's file plugin), same image and settings, runs alternated per
 * cell, a fresh image per write run.
 *
 * Workloads (queue depth 1, time-based, ramp excluded):
 * - install: 64 KiB sequential writes, a flush every 4 MiB (an OS install writing files);
 * - database: 4 KiB random writes, a flush after every 8 (a database committing);
 * - randread: 4 KiB random reads of written data (per format and cache mode).
 *
 * Prints each cell's IOPS, mean completion latency and the ratio vdisk / other server, then the
 * geometric means; writes every measurement as JSON (--json FILE, default bench-matrix.json).
 * Options: --quick (a subset in under 3 minutes), --runtime S, --ramp S, --rounds N,
 * --size MiB, --dir DIR, --only TEXT, --no-nbdkit, --vdisk-env K=V.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type FioJob, type FioResult, fio } from './lib/fio.js';
import {
  fmt,
  geometricMean,
  have,
  MiB,
  machineLine,
  median,
  requireTools,
  sh,
  table,
  writeRandomFile,
} from './lib/run.js';
import { type ServerName, startServer } from './lib/servers.js';
import { type SummaryLine, takeSummaryPath, writeSummary } from './lib/summary.js';

interface Options {
  quick: boolean;
  runtime: number;
  ramp: number;
  rounds: number;
  sizeMiB: number;
  dir: string | undefined;
  json: string;
  only: string[];
  nbdkit: boolean;
  vdiskEnv: Record<string, string>;
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    quick: false,
    runtime: 0,
    ramp: 1,
    rounds: 1,
    sizeMiB: 0,
    dir: undefined,
    json: 'bench-matrix.json',
    only: [],
    nbdkit: true,
    vdiskEnv: {},
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--runtime') o.runtime = Number(next());
    else if (a === '--ramp') o.ramp = Number(next());
    else if (a === '--rounds') o.rounds = Number(next());
    else if (a === '--size') o.sizeMiB = Number(next());
    else if (a === '--dir') o.dir = next();
    else if (a === '--json') o.json = next();
    else if (a === '--only') o.only.push(next());
    else if (a === '--no-nbdkit') o.nbdkit = false;
    else if (a === '--vdisk-env') {
      const [k, ...v] = next().split('=');
      o.vdiskEnv[k!] = v.join('=');
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: node dist/bench/matrix.js [--quick] [--runtime S] [--ramp S] [--rounds N] [--size MiB] [--dir DIR] [--json FILE] [--only TEXT] [--no-nbdkit] [--vdisk-env K=V]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (!o.runtime) o.runtime = o.quick ? 2 : 3;
  if (!o.sizeMiB) o.sizeMiB = o.quick ? 512 : 1024;
  return o;
}

interface Workload {
  name: string;
  job: Omit<FioJob, 'runtime' | 'ramp' | 'sizeMiB'>;
  writes: boolean;
}

const WORKLOADS: Workload[] = [
  { name: 'install', job: { rw: 'write', bs: '64k', iodepth: 1, fsync: 64 }, writes: true },
  { name: 'database', job: { rw: 'randwrite', bs: '4k', iodepth: 1, fsync: 8 }, writes: true },
  { name: 'randread', job: { rw: 'randread', bs: '4k', iodepth: 1 }, writes: false },
];

const PAIRS: { format: 'raw' | 'qcow2'; prealloc: string }[] = [
  { format: 'raw', prealloc: 'off' },
  { format: 'raw', prealloc: 'falloc' },
  { format: 'raw', prealloc: 'full' },
  { format: 'qcow2', prealloc: 'off' },
  { format: 'qcow2', prealloc: 'metadata' },
  { format: 'qcow2', prealloc: 'falloc' },
  { format: 'qcow2', prealloc: 'full' },
];

const CACHES = ['none', 'writeback', 'writethrough', 'directsync', 'unsafe'];

const QUICK = {
  pairs: ['raw off', 'qcow2 off', 'qcow2 metadata'],
  caches: ['none', 'writeback'],
};

interface Cell {
  workload: string;
  format: string;
  prealloc: string;
  cache: string;
  results: Partial<Record<ServerName, FioResult[]>>;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const summaryPath = takeSummaryPath(argv);
  const o = parseOptions(argv);
  requireTools('bench:matrix', ['fio', 'qemu-nbd', 'qemu-img']);
  const nbdkit = o.nbdkit && have('nbdkit');
  const dir = await mkdtemp(path.join(o.dir ?? os.tmpdir(), 'vdisk-bench-matrix-'));
  process.stdout.write(
    `vdisk serve vs qemu-nbd${nbdkit ? ' (and nbdkit file for raw)' : ''}, fio --ioengine=nbd over a Unix socket, queue depth 1\n` +
      `images of ${o.sizeMiB} MiB in ${dir}; ${o.runtime} s per run after ${o.ramp} s of ramp; ${o.rounds} round(s), servers alternating\n` +
      `${machineLine()}\n\n`,
  );
  const cells: Cell[] = [];
  const sizeBytes = o.sizeMiB * MiB;
  try {
    const data = path.join(dir, 'data.raw');
    writeRandomFile(data, sizeBytes);
    for (const w of WORKLOADS) {
      for (const pair of PAIRS) {
        // Reads do not depend on how the image was preallocated: one per format.
        if (!w.writes && pair.prealloc !== 'off') continue;
        if (o.quick && !QUICK.pairs.includes(`${pair.format} ${pair.prealloc}`)) continue;
        for (const cache of CACHES) {
          if (o.quick && !QUICK.caches.includes(cache)) continue;
          const label = `${w.name} ${pair.format} ${pair.prealloc} ${cache}`;
          if (o.only.length && !o.only.some((f) => label.includes(f))) continue;
          const servers: ServerName[] = ['qemu-nbd', 'vdisk'];
          if (nbdkit && pair.format === 'raw') servers.push('nbdkit');
          const cell: Cell = { workload: w.name, format: pair.format, prealloc: pair.prealloc, cache, results: {} };
          for (let round = 0; round < o.rounds; round++) {
            for (const which of servers) {
              const image = path.join(dir, `image.${pair.format}`);
              if (w.writes) {
                sh('qemu-img', [
                  'create',
                  '-q',
                  '-f',
                  pair.format,
                  '-o',
                  `preallocation=${pair.prealloc}`,
                  image,
                  String(sizeBytes),
                ]);
              } else {
                sh('qemu-img', ['convert', '-f', 'raw', '-O', pair.format, data, image]);
                if (cache !== 'none' && cache !== 'directsync') spawnSync('cat', [image], { stdio: 'ignore' });
              }
              const socket = path.join(dir, `${which}.sock`);
              const server = await startServer(
                which,
                image,
                pair.format,
                cache,
                socket,
                which === 'vdisk' ? o.vdiskEnv : {},
              );
              try {
                const result = fio(
                  { uri: server.uri },
                  { ...w.job, runtime: o.runtime, ramp: o.ramp, sizeMiB: o.sizeMiB },
                );
                cell.results[which] = [...(cell.results[which] ?? []), result];
              } finally {
                await server.stop();
                await rm(image, { force: true });
              }
            }
          }
          cells.push(cell);
          process.stdout.write(`${describeCell(cell)}\n`);
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`\n${summary(cells)}\n`);
  writeSummary(summaryPath, summaryLines(cells));
  await writeFile(o.json, `${JSON.stringify({ machine: machineLine(), options: o, cells }, null, 2)}\n`);
  process.stdout.write(`\nevery measurement: ${o.json}\n`);
}

function medianOf(cell: Cell, which: ServerName): FioResult | undefined {
  const runs = cell.results[which];
  if (!runs?.length) return undefined;
  return { iops: median(runs.map((r) => r.iops)), clatMeanUs: median(runs.map((r) => r.clatMeanUs)) };
}

function describeCell(cell: Cell): string {
  const v = medianOf(cell, 'vdisk')!;
  const q = medianOf(cell, 'qemu-nbd')!;
  const k = medianOf(cell, 'nbdkit');
  let line =
    `${`${cell.workload} ${cell.format} ${cell.prealloc} ${cell.cache}`.padEnd(36)}` +
    ` vdisk ${fmt(v.iops).padStart(6)} (${v.clatMeanUs.toFixed(0)} µs)` +
    `  qemu-nbd ${fmt(q.iops).padStart(6)} (${q.clatMeanUs.toFixed(0)} µs)  v/q ${(v.iops / q.iops).toFixed(2)}`;
  if (k)
    line += `  nbdkit ${fmt(k.iops).padStart(6)} (${k.clatMeanUs.toFixed(0)} µs)  v/k ${(v.iops / k.iops).toFixed(2)}`;
  return line;
}

function summary(cells: Cell[]): string {
  const rows = [['workload', 'format', 'prealloc', 'cache', 'vdisk', 'qemu-nbd', 'v/q', 'nbdkit', 'v/k']];
  const byWorkload = new Map<string, number[]>();
  const vk: number[] = [];
  for (const cell of cells) {
    const v = medianOf(cell, 'vdisk')!;
    const q = medianOf(cell, 'qemu-nbd')!;
    const k = medianOf(cell, 'nbdkit');
    const ratio = v.iops / q.iops;
    byWorkload.set(cell.workload, [...(byWorkload.get(cell.workload) ?? []), ratio]);
    if (k) vk.push(v.iops / k.iops);
    rows.push([
      cell.workload,
      cell.format,
      cell.prealloc,
      cell.cache,
      fmt(v.iops),
      fmt(q.iops),
      ratio.toFixed(2),
      k ? fmt(k.iops) : '',
      k ? (v.iops / k.iops).toFixed(2) : '',
    ]);
  }
  const all = [...byWorkload.values()].flat();
  let text = table(rows);
  text += `\n\ngeometric mean vdisk/qemu-nbd: ${all.length ? geometricMean(all).toFixed(2) : '-'} over ${all.length} cells`;
  for (const [name, ratios] of byWorkload) text += `; ${name} ${geometricMean(ratios).toFixed(2)}`;
  if (vk.length) text += `\ngeometric mean vdisk/nbdkit (raw): ${geometricMean(vk).toFixed(2)} over ${vk.length} cells`;
  return text;
}

/** What `npm run bench` shows of the matrix: the geometric means, the worst cell, raw against nbdkit. */
function summaryLines(cells: Cell[]): SummaryLine[] {
  const vq = cells.map((c) => ({ c, r: medianOf(c, 'vdisk')!.iops / medianOf(c, 'qemu-nbd')!.iops }));
  const vk = cells.flatMap((c) => {
    const k = medianOf(c, 'nbdkit');
    return k ? [medianOf(c, 'vdisk')!.iops / k.iops] : [];
  });
  if (vq.length === 0) return [];
  const lines: SummaryLine[] = [
    {
      bench: 'matrix',
      measure: 'QD1 geometric mean vdisk/qemu-nbd',
      value: geometricMean(vq.map((x) => x.r)),
      atLeast: 1.1,
    },
  ];
  const worst = vq.reduce((a, b) => (b.r < a.r ? b : a));
  const name = `${worst.c.workload} ${worst.c.format} ${worst.c.prealloc} ${worst.c.cache}`;
  lines.push({ bench: 'matrix', measure: `QD1 worst cell (${name})`, value: worst.r, atLeast: 0.95 });
  if (vk.length)
    lines.push({
      bench: 'matrix',
      measure: 'QD1 raw geometric mean vdisk/nbdkit',
      value: geometricMean(vk),
      atLeast: 1,
    });
  return lines;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:matrix: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
