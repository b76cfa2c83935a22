/** Small helpers the benchmarks share: running commands, test files, medians, number text. */
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import os from 'node:os';

export const MiB = 1024 * 1024;

/** Runs a command that must succeed; returns its stdout. */
export function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export function have(tool: string): boolean {
  return spawnSync('which', [tool]).status === 0;
}

/** Exits with a clear message when a tool the benchmark needs is missing. */
export function requireTools(bench: string, tools: string[]): void {
  for (const tool of tools) {
    if (!have(tool)) {
      process.stderr.write(`${bench} needs ${tool}, which is not installed\n`);
      process.exit(2);
    }
  }
}

/** A file of `size` bytes of random data, written in 4 MiB pieces. */
export function writeRandomFile(file: string, size: number): void {
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

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function geometricMean(values: number[]): number {
  return Math.exp(values.reduce((a, r) => a + Math.log(r), 0) / values.length);
}

export function fmt(n: number): string {
  return n >= 10_000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0);
}

/** One line about the machine, for the head of a report. */
export function machineLine(): string {
  const load = os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
  return `node ${process.version}, ${os.cpus().length} CPUs, load average ${load}`;
}

/** Rows of text cells as aligned columns. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n');
}
