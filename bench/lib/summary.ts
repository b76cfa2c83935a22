/**
 * The few figures each benchmark reports to `npm run bench` (bench/all.ts): one line per measure
 * (mostly a ratio against the other side) and the project's target for it. A benchmark run with
 * `--summary FILE` writes them there as JSON.
 */
import { writeFileSync } from 'node:fs';

export interface SummaryLine {
  bench: string;
  measure: string;
  value: number;
  /** The project's target: at least this much… */
  atLeast?: number;
  /** …or at most (peak memory). */
  atMost?: number;
}

/** The path after `--summary` in argv, removed from it; undefined when absent. */
export function takeSummaryPath(argv: string[]): string | undefined {
  const i = argv.indexOf('--summary');
  if (i < 0) return undefined;
  const file = argv[i + 1];
  argv.splice(i, 2);
  return file;
}

export function writeSummary(file: string | undefined, lines: SummaryLine[]): void {
  if (file) writeFileSync(file, `${JSON.stringify(lines, null, 2)}\n`);
}
