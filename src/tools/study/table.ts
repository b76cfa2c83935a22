/**
 * The ranked terminal table: one row per combination, best score first ("3–7": the places a
 * combination tied with others within the measured spread could take), each workload's figure,
 * creation time and space on disk; combinations that did not run last, with the reason. An NBD
 * study has one row, the export, and nothing created.
 */
import { SAFETY_TEXT } from './matrix.js';
import { figure, formatNumber, rankResults, rankText } from './rank.js';
import type { StudyRun } from './results.js';
import { type WorkloadName, workload } from './workloads.js';

/** A read's page-cache state under its metric: "cold" or "warm" (nothing where nothing was evicted). */
export function pageCacheLabel(run: Pick<StudyRun, 'evictedReads'>, name: WorkloadName): string {
  const state = workload(name).pageCache;
  if (state === undefined || (state === 'cold' && !run.evictedReads)) return '';
  return state;
}

/** What the words of the table mean: the crash-safety classes, and cold and warm reads. */
export function tableLegend(run: Pick<StudyRun, 'engine' | 'evictedReads' | 'workloads'>): string {
  const lines: string[] = [];
  if (run.engine !== 'nbd') {
    lines.push(...(['volatile', 'flush-safe', 'durable'] as const).map((s) => `${s.padEnd(10)}  ${SAFETY_TEXT[s]}`));
  }
  if (run.workloads.some((n) => workload(n).pageCache === 'cold')) {
    lines.push(
      run.evictedReads
        ? "cold        read after the image's pages were dropped from the host page cache: the storage's speed"
        : "reads       the server's cache as it is: the study cannot drop it",
    );
  }
  if (run.workloads.some((n) => workload(n).pageCache === 'warm')) {
    lines.push('warm        read again with the data in the host page cache (RAM); reported, not scored');
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

export function sizeText(bytes: number): string {
  if (bytes < 1024 * 1024) return `${formatNumber(bytes / 1024)}K`;
  if (bytes < 1024 * 1024 * 1024) return `${formatNumber(bytes / 1024 / 1024)}M`;
  return `${formatNumber(bytes / 1024 / 1024 / 1024)}G`;
}

interface Column {
  head: [string, string];
  right: boolean;
}

export function formatTable(run: StudyRun): string {
  const server = run.engine === 'nbd';
  const columns: Column[] = [
    ...(server
      ? [{ head: ['export', ''], right: false } as Column]
      : ([
          { head: ['#', ''], right: true },
          { head: ['format', ''], right: false },
          { head: ['prealloc', ''], right: false },
          { head: ['cache', ''], right: false },
          { head: ['crash', 'safety'], right: false },
          { head: ['score', ''], right: true },
        ] as Column[])),
    ...run.workloads.map(
      (name): Column => ({
        head: [name, `${workload(name).metric} ${pageCacheLabel(run, name)}`.trim()],
        right: true,
      }),
    ),
    ...(server
      ? []
      : ([
          { head: ['create', 's'], right: true },
          { head: ['disk', 'new'], right: true },
          { head: ['disk', 'after'], right: true },
        ] as Column[])),
  ];
  const rows: string[][] = [];
  for (const r of rankResults(run)) {
    const res = r.result;
    const row = server
      ? [run.server?.uri ?? res.id]
      : [rankText(r.tie), res.format, res.prealloc, res.cache, res.safety];
    if (res.status !== 'ok') {
      rows.push([...row, `${res.status}: ${res.reason ?? ''}`]);
      continue;
    }
    if (!server) row.push(r.score === null ? '-' : r.score.toFixed(2));
    for (const name of run.workloads) {
      const w = res.workloads.find((x) => x.name === name);
      row.push(w ? formatNumber(figure(w)) : '-');
    }
    if (!server) {
      row.push(res.create ? formatNumber(res.create.seconds) : '-');
      row.push(res.create ? sizeText(res.create.allocatedBytes) : '-');
      row.push(res.afterRun ? sizeText(res.afterRun.allocatedBytes) : '-');
    }
    rows.push(row);
  }
  const widths = columns.map((c, i) =>
    Math.max(
      c.head[0].length,
      c.head[1].length,
      ...rows.filter((r) => r.length === columns.length).map((r) => r[i]!.length),
    ),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => {
        // A row that did not run has one long last cell: no padding for it.
        if (i === cells.length - 1 && cells.length < columns.length) return cell;
        const w = widths[i]!;
        return columns[i]!.right ? cell.padStart(w) : cell.padEnd(w);
      })
      .join('  ')
      .trimEnd();
  const out = [line(columns.map((c) => c.head[0])), line(columns.map((c) => c.head[1])), ...rows.map(line)];
  return `${out.join('\n')}\n`;
}
