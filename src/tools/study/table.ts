/**
 * The ranked terminal table: one row per combination, best score first ("3–7": the places a
 * combination tied with others within the measured spread could take), each workload's figure,
 * creation time and space on disk; combinations that did not run last, with the reason. An NBD
 * study has one row, the export, and nothing created.
 */
import type { Safety } from './matrix.js';
import { figure, formatNumber, rankResults, rankText } from './rank.js';
import type { StudyRun } from './results.js';
import { type WorkloadName, workload } from './workloads.js';

const SHORT: Record<WorkloadName, string> = {
  install: 'install',
  'seq-write': 'seq-wr',
  'seq-read': 'seq-rd',
  'rand-read': 'rand-rd',
  'db-write': 'db-new',
  'db-rewrite': 'db-rewr',
};

const SAFETY_LABEL: Record<Safety, string> = {
  volatile: 'UNSAFE',
  'flush-safe': 'on flush',
  durable: 'durable',
};

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
    ...run.workloads.map((name): Column => ({ head: [SHORT[name], workload(name).metric], right: true })),
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
      : [rankText(r.tie), res.format, res.prealloc, res.cache, SAFETY_LABEL[res.safety]];
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
