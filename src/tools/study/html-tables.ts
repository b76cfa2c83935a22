/** The report's tables: the ranking (ties as "3–7"), definition lists for workloads and the machine. */
import { SAFETY_TEXT } from './matrix.js';
import { figure, figureSpread, formatNumber } from './rank.js';
import type { StudyReport } from './report-json.js';
import { esc } from './svg-charts.js';
import { pageCacheLabel, sizeText } from './table.js';
import { workload, workloadTitle } from './workloads.js';

function cell(text: string, sort?: number | null, cls = ''): string {
  const s = sort === undefined ? '' : ` data-sort="${sort ?? ''}"`;
  return `<td${cls ? ` class="${cls}"` : ''}${s}>${esc(text)}</td>`;
}

/** "3", or "3–7" for a combination tied with others (grey, the number of ties in its tooltip). */
function rankCell(rank: number | null, range: [number, number] | null): string {
  if (rank === null || range === null) return cell('-', rank, 'l');
  const [best, worst] = range;
  if (best === worst) return cell(String(best), rank, 'l');
  const title = `tied with ${worst - best} other combination(s): within each other's measured spread`;
  return `<td class="l tied" data-sort="${rank}" title="${esc(title)}">${best}–${worst}</td>`;
}

/** A heading in two lines, the name breakable at its hyphens, so that narrow columns stay narrow. */
function head(name: string, unit: string, title: string): string {
  const breakable = esc(name).replace(/-/g, '-<wbr>');
  return `<th title="${esc(title)}">${breakable}<br><span class="unit-head">${esc(unit)}</span></th>`;
}

/**
 * The ranking, one figure per workload (its p50/p99 latencies in the cell's tooltip): it fits a
 * 1400 px page with every workload, cold and warm reads labelled under their names.
 */
export function rankingTable(report: StudyReport, id: string): string {
  const heads = [
    '<th class="l">#</th><th class="l">format</th><th class="l">prealloc</th><th class="l">cache</th><th class="l">crash<br>safety</th>',
    head('score', 'all', 'geometric mean of the scored workloads, 1.00 = best at everything'),
    head('writes', 'score', 'install, seq-write, db-write, db-rewrite'),
    head('first', 'touch', 'install, seq-write, db-write'),
    head('steady', 'state', 'db-rewrite'),
    head('reads', 'cold', 'seq-read, rand-read'),
    ...report.workloads.map((n) => {
      const def = workload(n);
      return head(n, `${def.metric} ${pageCacheLabel(report, n)}`.trim(), workloadTitle(n, report.evictedReads));
    }),
    head('create', 's', 'creation time'),
    head('disk', 'new', 'space on disk after creation'),
    head('disk', 'after', 'space on disk after the workloads'),
  ].join('');
  const rows = report.ranking.map((rank) => {
    const r = report.results.find((x) => x.id === rank.id)!;
    const lead =
      rankCell(rank.rank, rank.rankRange) +
      cell(r.format, undefined, 'l') +
      cell(r.prealloc, undefined, 'l') +
      cell(r.cache, undefined, 'l') +
      `<td class="l ${r.safety}" title="${esc(SAFETY_TEXT[r.safety])}">${esc(r.safety)}</td>`;
    if (r.status !== 'ok') {
      const span = 5 + report.workloads.length + 3;
      return `<tr class="not-run" data-id="${esc(r.id)}">${lead}<td class="l" colspan="${span}">${esc(`${r.status}: ${r.reason}`)}</td></tr>`;
    }
    const score = (v: number | null) => cell(v === null ? '-' : v.toFixed(2), v);
    const perWorkload = report.workloads.map((n) => {
      const w = r.workloads.find((x) => x.name === n);
      if (!w) return '<td>-</td>';
      const latency = `latency p50 ${formatNumber(w.latencyMs.p50)} ms, p99 ${formatNumber(w.latencyMs.p99)} ms`;
      return `<td data-sort="${figure(w)}" title="${esc(latency)}">${esc(formatNumber(figure(w)))}</td>`;
    });
    return (
      `<tr data-id="${esc(r.id)}">${lead}${score(rank.score)}${score(rank.writes)}${score(rank.firstTouch)}${score(rank.steady)}${score(rank.reads)}` +
      perWorkload.join('') +
      cell(r.create ? formatNumber(r.create.seconds) : '-', r.create?.seconds) +
      cell(r.create ? sizeText(r.create.allocatedBytes) : '-', r.create?.allocatedBytes) +
      cell(r.afterRun ? sizeText(r.afterRun.allocatedBytes) : '-', r.afterRun?.allocatedBytes) +
      '</tr>'
    );
  });
  return `<div class="table-wrap"><table class="sortable ranking" id="${esc(id)}"><thead><tr>${heads}</tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}

/** An NBD study's one export: each workload's figure, the range of its repetitions, and latencies. */
export function exportTable(report: StudyReport): string {
  const r = report.results[0];
  if (!r) return '';
  const rows = report.workloads.map((n) => {
    const w = r.workloads.find((x) => x.name === n);
    if (!w)
      return `<tr data-workload="${esc(n)}">${cell(n, undefined, 'l')}<td class="l" colspan="5">${esc(r.reason ?? 'not measured')}</td></tr>`;
    const spread = figureSpread(w);
    return (
      `<tr data-workload="${esc(n)}">${cell(`${n} ${pageCacheLabel(report, n)}`.trim(), undefined, 'l')}` +
      cell(`${formatNumber(figure(w))} ${workload(n).metric}`, figure(w)) +
      cell(`${formatNumber(spread.low)}–${formatNumber(spread.high)}`) +
      cell(formatNumber(w.latencyMs.p50), w.latencyMs.p50) +
      cell(formatNumber(w.latencyMs.p99), w.latencyMs.p99) +
      cell(w.flushes ? formatNumber(w.flushLatencyMs.p99) : '-', w.flushLatencyMs.p99) +
      '</tr>'
    );
  });
  const heading =
    '<th class="l">workload</th><th>median</th><th>range of the repetitions</th><th>p50 ms</th><th>p99 ms</th><th>flush p99 ms</th>';
  return `<div class="table-wrap"><table class="sortable" id="export-figures"><thead><tr>${heading}</tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}

export function definitionList(entries: Array<[string, string]>): string {
  return `<dl>${entries.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`;
}

/** The machine, and the filesystem the images were made on (or the export an NBD study measured). */
export function machineList(report: StudyReport): string {
  const m = report.machine;
  const fs = report.filesystem;
  const server = report.server;
  const storage: Array<[string, string]> = fs
    ? [
        [
          'filesystem',
          `${fs.type} on ${fs.device ?? '?'} mounted at ${fs.mountPoint ?? '?'} (${fs.mountOptions ?? '?'})`,
        ],
        [
          'device',
          fs.rotational === null
            ? 'unknown'
            : fs.rotational
              ? 'rotational, says the kernel (a hard disk, or a virtual disk that does not tell)'
              : 'non-rotational, says the kernel (SSD or NVMe)',
        ],
        ['images made in', fs.dir],
        ['free space', fs.freeBytes === null ? '?' : sizeText(fs.freeBytes)],
      ]
    : [];
  if (server) {
    const has = (yes: boolean, what: string) => `${what} ${yes ? 'yes' : 'no'}`;
    storage.push(
      ['NBD export', `${server.uri}, ${sizeText(server.exportBytes)}; its first ${sizeText(report.size)} measured`],
      [
        'advertised',
        [has(server.fua, 'FUA'), has(server.trim, 'TRIM'), has(server.writeZeroes, 'WRITE_ZEROES')].join(', '),
      ],
    );
  }
  return definitionList([
    ['OS', `${m.os} ${m.arch}, kernel ${m.kernel} (${m.kernelVersion})`],
    ['CPU', `${m.cpus} × ${m.cpuModel}`],
    ['memory', sizeText(m.memoryBytes)],
    ['Node.js', m.node],
    [
      'load average',
      `${report.load.start.map((v) => v.toFixed(2)).join(' ')} at the start, ${report.load.end.map((v) => v.toFixed(2)).join(' ')} at the end`,
    ],
    ['vdisk', m.vdisk],
    ['libuv I/O', m.uvUseIoUring === '1' ? 'io_uring (UV_USE_IO_URING=1)' : 'thread pool'],
    ...storage,
  ]);
}
