/** One fio run against an NBD URI (or a file), and what the benchmarks read from its JSON. */
import { sh } from './run.js';

export interface FioJob {
  rw: string;
  bs: string;
  iodepth: number;
  /** A flush after every this many writes (fio's --fsync; NBD_CMD_FLUSH over nbd). */
  fsync?: number;
  runtime: number;
  ramp: number;
  sizeMiB: number;
}

export interface FioResult {
  iops: number;
  /** Mean completion latency of reads and writes, in microseconds. */
  clatMeanUs: number;
}

interface FioSide {
  iops: number;
  total_ios: number;
  clat_ns: { mean: number };
}

export function fio(
  target: { uri: string } | { file: string; engine: string; direct: boolean },
  job: FioJob,
): FioResult {
  const args = [
    '--name=bench',
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${job.sizeMiB}M`,
    `--runtime=${job.runtime}`,
    '--time_based',
    `--ramp_time=${job.ramp}`,
    '--randrepeat=0',
    '--output-format=json',
  ];
  if (job.fsync) args.push(`--fsync=${job.fsync}`);
  if ('uri' in target) args.push('--ioengine=nbd', `--uri=${target.uri}`);
  else args.push(`--ioengine=${target.engine}`, `--filename=${target.file}`, `--direct=${target.direct ? 1 : 0}`);
  const out = sh('fio', args);
  // fio's nbd engine prints "fio: connected to NBD server" before the JSON.
  const json = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ read: FioSide; write: FioSide }> };
  const { read, write } = json.jobs[0]!;
  const ios = read.total_ios + write.total_ios;
  const clat = ios > 0 ? (read.clat_ns.mean * read.total_ios + write.clat_ns.mean * write.total_ios) / ios : 0;
  return { iops: read.iops + write.iops, clatMeanUs: clat / 1000 };
}
