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
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const VDISK_MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
const MiB = 1024 * 1024;

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

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function have(tool: string): boolean {
  return spawnSync('which', [tool]).status === 0;
}

/** A raw file of `size` bytes of random data, written in 4 MiB pieces. */
function writeRandomFile(file: string, size: number): void {
  const fd = openSync(file, 'w');
  const buf = Buffer.allocUnsafe(4 * MiB);
  try {
    for (let done = 0; done < size; done += buf.length) {
      randomFillSync(buf);
      writeSync(fd, buf, 0, Math.min(buf.length, size - done), done);
    }
  } finally {
    closeSync(fd);
  }
}

async function waitConnectable(socket: string, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error('the server exited');
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(socket);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 30));
  }
  throw new Error(`no server on ${socket}`);
}

interface Server {
  uri: string;
  stop(): Promise<void>;
}

async function startServer(
  which: 'qemu-nbd' | 'vdisk',
  image: string,
  format: string,
  cache: string,
  socket: string,
  extraEnv: Record<string, string>,
): Promise<Server> {
  // Both: persistent, several clients allowed (the probe connection counts as one).
  const args = ['-f', format, `--cache=${cache}`, '-t', '-e', '4', '-k', socket, image];
  const proc =
    which === 'qemu-nbd'
      ? spawn('qemu-nbd', args, { stdio: 'ignore' })
      : spawn(process.execPath, [VDISK_MAIN, 'serve', ...args], {
          stdio: ['ignore', 'ignore', 'inherit'],
          env: { ...process.env, ...extraEnv },
        });
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  await waitConnectable(socket, proc);
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** Runs fio once and returns the IOPS (reads plus writes). */
function fio(uri: string, w: Workload, runtime: number, sizeMiB: number): number {
  const out = sh('fio', [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${w.rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.iodepth}`,
    `--size=${sizeMiB}M`,
    `--runtime=${runtime}`,
    '--time_based',
    '--ramp_time=1',
    '--randrepeat=0',
    '--output-format=json',
  ]);
  // fio's nbd engine prints "fio: connected to NBD server" before the JSON.
  const json = JSON.parse(out.slice(out.indexOf('{'))) as {
    jobs: Array<{ read: { iops: number }; write: { iops: number } }>;
  };
  const job = json.jobs[0]!;
  return job.read.iops + job.write.iops;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function fmt(n: number): string {
  return n >= 10_000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0);
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  for (const tool of ['fio', 'qemu-nbd', 'qemu-img']) {
    if (!have(tool)) {
      process.stderr.write(`bench:nbd needs ${tool}, which is not installed\n`);
      process.exit(2);
    }
  }
  const dir = await mkdtemp(path.join(o.dir ?? os.tmpdir(), 'vdisk-bench-nbd-'));
  const size = o.sizeMiB * MiB;
  process.stdout.write(
    `vdisk serve vs qemu-nbd, fio --ioengine=nbd over a Unix socket; image ${o.sizeMiB} MiB in ${dir}\n` +
      `runtime ${o.runtime}s per run, ${o.rounds} run(s) per server, alternating; median IOPS\n` +
      `node ${process.version}, ${os.cpus().length} CPUs, load average ${os
        .loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}` +
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
                results[which].push(fio(server.uri, w, o.runtime, o.sizeMiB));
              } finally {
                await server.stop();
              }
            }
          }
          const q = median(results['qemu-nbd']);
          const v = median(results.vdisk);
          const ratio = v / q;
          ratios.push(ratio);
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
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  process.stdout.write(`\n${rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n')}\n`);
  if (ratios.length) {
    const geo = Math.exp(ratios.reduce((a, r) => a + Math.log(r), 0) / ratios.length);
    process.stdout.write(`\ngeometric mean of vdisk/qemu-nbd: ${geo.toFixed(2)}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:nbd: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
