/** `vdisk study`: what cache mode and preallocation do to guest I/O on this machine's storage. */
import path from 'node:path';
import { CACHE_MODE_NAMES } from '../block/cache-mode.js';
import { isVdiskError, VdiskError } from '../block/errors.js';
import { formatSize, parseSize } from '../tools/size.js';
import { agreementLine, comparisonText } from '../tools/study/agreement-text.js';
import { compareStudyFiles } from '../tools/study/compare-files.js';
import { type EnginesReport, enginesReport, engineTitle, type StudyDocument } from '../tools/study/engines-report.js';
import { busyNote } from '../tools/study/machine.js';
import {
  ALL_PREALLOCATIONS,
  PROFILES,
  parseNameList,
  STUDY_FORMATS,
  type StudyProfile,
  studyMatrix,
} from '../tools/study/matrix.js';
import { qemuNbdInstalled } from '../tools/study/qemu-engine.js';
import { writeHtmlReport } from '../tools/study/report-html.js';
import { type StudyReport, studyReport, writeJsonReport } from '../tools/study/report-json.js';
import type { StudyEngine, StudyRun } from '../tools/study/results.js';
import { runStudy, type StudyProgress } from '../tools/study/runner.js';
import { checkServerStudy, runServerStudy } from '../tools/study/server-study.js';
import { formatTable, tableLegend } from '../tools/study/table.js';
import { WORKLOAD_NAMES, WORKLOADS, workloadTitle } from '../tools/study/workloads.js';
import { type CliCommand, type CliStreams, type CommandSpec, parseCommandLine, usageError } from './args.js';
import { progressBar } from './progress.js';

const SPEC: CommandSpec = {
  name: 'study',
  operands: '[A.json [B.json]]',
  purpose: 'measure every cache mode and preallocation on this storage',
  description: `
Measures what the host cache mode and the preallocation mode do to guest I/O on this machine's
storage. For every format × preallocation × cache mode it creates a fresh image (timing the
creation), runs guest-like workloads through vdisk's block layer with requests in flight (each
workload three times, the median kept), ends every write workload with a flush counted in its
time, and records throughput, IOPS and latency percentiles. It prints a ranked table (ties where
combinations are within each other's measured spread) and a recommendation that weighs speed
against what a host crash can do, and writes every measurement to a JSON file and a
self-contained HTML report. Combinations the filesystem cannot do (O_DIRECT on some filesystems)
are reported, not dropped.

With --nbd, the same workloads measure a running NBD server with its own settings; they write
over the export's first SIZE bytes, so --nbd-scratch must confirm that it holds nothing to keep.
With --compare, nothing is measured: Spearman's ρ between the rankings of two study files (or of
the two engines in one file), to see whether a ranking repeats.`,
  options: {
    quick: { type: 'boolean', help: 'small images, short runs: about two minutes (the default)' },
    full: { type: 'boolean', help: 'larger images, longer runs, three rounds: 15 to 20 minutes' },
    dir: {
      type: 'string',
      arg: 'DIR',
      help: 'where the images are made, in a temporary directory removed afterwards\n(default: the current directory, so its filesystem is the one measured)',
    },
    size: {
      type: 'string',
      arg: 'SIZE',
      help: 'image size, or bytes of an export measured (default: 256M quick, 1G full)',
    },
    formats: { type: 'string', arg: 'LIST', help: 'raw,qcow2 (default both)' },
    cache: { type: 'string', arg: 'LIST', help: 'none,writethrough,writeback,directsync,unsafe (default all)' },
    prealloc: {
      type: 'string',
      arg: 'LIST',
      help: 'off,metadata,falloc,full (default all; metadata exists for qcow2 only)',
    },
    workloads: { type: 'string', arg: 'LIST', help: `${WORKLOAD_NAMES.join(',')} (default all)` },
    json: { type: 'string', arg: 'FILE', help: 'where the JSON goes (default vdisk-study-<date>.json)' },
    html: { type: 'string', arg: 'FILE', help: 'where the HTML report goes (default vdisk-study-<date>.html)' },
    engine: {
      type: 'string',
      arg: 'vdisk|qemu|both',
      help: "whose block layer to measure: vdisk's (default), QEMU's through qemu-nbd, or both,\none after the other, in one report with how far their rankings agree",
    },
    nbd: { type: 'string', arg: 'URI', help: "measure this NBD export with its server's own settings (one cell)" },
    'nbd-scratch': {
      type: 'boolean',
      help: 'confirm that the export holds nothing to keep: the study overwrites its first SIZE bytes',
    },
    compare: {
      type: 'boolean',
      help: "print Spearman's ρ between the rankings in the study files A.json and B.json; measure nothing",
    },
    smoke: { type: 'boolean', help: 'tiny, seconds-long run whose numbers mean nothing (for tests)' },
  },
  notes: `Workloads:\n${WORKLOADS.map((w) => `  ${w.name.padEnd(14)} ${workloadTitle(w.name)}`).join('\n')}`,
};

/** Options that choose the matrix, which an NBD study (one export, its server's settings) does not have. */
const MATRIX_OPTIONS = ['dir', 'formats', 'cache', 'prealloc', 'engine'] as const;

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/\.\d+Z$/, '')
    .replace(/:/g, '-');
}

type Values = ReturnType<typeof parseCommandLine>['values'];

export const studyCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (values.compare) return compare(values, positionals, streams);
    if (positionals.length > 0) throw usageError('study', `Unexpected argument: ${positionals[0]}`);
    if ([values.quick, values.full, values.smoke].filter(Boolean).length > 1) {
      throw usageError('study', 'Choose one of --quick, --full and --smoke');
    }
    const profile = PROFILES[values.full ? 'full' : values.smoke ? 'smoke' : 'quick'];
    const size = values.size === undefined ? profile.size : parseSize(values.size as string);
    if (size < 1024 * 1024) throw new VdiskError('EINVAL', 'The study needs images of at least 1 MiB');
    const workloads = parseNameList((values.workloads as string | undefined) ?? 'all', WORKLOAD_NAMES, 'workload');
    const now = new Date();
    const files = {
      json: (values.json as string | undefined) ?? `vdisk-study-${stamp(now)}.json`,
      html: (values.html as string | undefined) ?? `vdisk-study-${stamp(now)}.html`,
    };
    const command = ['vdisk', 'study', ...args].join(' ');
    if (values.nbd !== undefined) {
      const given = MATRIX_OPTIONS.find((o) => values[o] !== undefined);
      if (given)
        throw usageError(
          'study',
          `--${given} does not apply to --nbd, which measures one export as its server is set up`,
        );
      checkServerStudy(values.nbd as string, size, Boolean(values['nbd-scratch']));
      streams.out(
        `vdisk study (${profile.name}) of ${values.nbd}: ${plural(workloads.length, 'workload')}, its first ${formatSize(size)}\n`,
      );
      const run = await withProgress(streams, (signal, onProgress) =>
        runServerStudy({
          uri: values.nbd as string,
          profile,
          size,
          workloads,
          scratch: Boolean(values['nbd-scratch']),
          signal,
          onProgress,
        }),
      );
      const report = studyReport(run, command);
      await writeReports(files, report);
      printRun(streams, report);
      printPaths(streams, files);
      return 0;
    }
    if (values['nbd-scratch']) throw usageError('study', '--nbd-scratch goes with --nbd');
    return studyMatrixCommand(values, { profile, size, workloads, files, command }, streams);
  },
};

interface MatrixRun {
  profile: StudyProfile;
  size: number;
  workloads: StudyRun['workloads'];
  files: { json: string; html: string };
  command: string;
}

async function studyMatrixCommand(values: Values, o: MatrixRun, streams: CliStreams): Promise<number> {
  const selection = {
    formats: parseNameList((values.formats as string | undefined) ?? 'all', STUDY_FORMATS, 'format'),
    caches: parseNameList((values.cache as string | undefined) ?? 'all', CACHE_MODE_NAMES, 'cache mode'),
    preallocs: parseNameList(
      (values.prealloc as string | undefined) ?? 'all',
      ALL_PREALLOCATIONS,
      'preallocation mode',
    ),
  };
  const engineChoice = (values.engine as string | undefined) ?? 'vdisk';
  if (!['vdisk', 'qemu', 'both'].includes(engineChoice)) {
    throw usageError('study', `Invalid --engine: ${engineChoice} (use vdisk, qemu or both)`);
  }
  let engines: Array<Exclude<StudyEngine, 'nbd'>> =
    engineChoice === 'both' ? ['vdisk', 'qemu'] : [engineChoice as 'vdisk'];
  const combinations = studyMatrix(selection).length;
  const dir = path.resolve((values.dir as string | undefined) ?? '.');
  const notMeasured: EnginesReport['notMeasured'] = [];
  if (engines.includes('qemu') && !qemuNbdInstalled()) {
    const reason = 'qemu-nbd is not installed (Debian: apt-get install qemu-utils)';
    streams.err(`vdisk: study: ${reason}; QEMU is not measured\n`);
    if (engines.length === 1) return 1;
    notMeasured.push({ engine: 'qemu', reason });
    engines = engines.filter((e) => e !== 'qemu');
  }
  const { profile, size } = o;
  streams.out(
    `vdisk study (${profile.name}): ${plural(combinations, 'combination')} × ${plural(o.workloads.length, 'workload')}` +
      ` × ${plural(profile.repeats, 'repetition')}${profile.rounds > 1 ? ` × ${profile.rounds} rounds` : ''}, ` +
      `${formatSize(size)} images in ${dir}\n`,
  );
  const reports: StudyReport[] = [];
  for (const engine of engines) {
    if (engineChoice === 'both')
      streams.out(`\n${engine === 'qemu' ? 'QEMU (qemu-nbd, through the NBD client)' : 'vdisk'}:\n`);
    let run: StudyRun;
    try {
      run = await withProgress(streams, (signal, onProgress) =>
        runStudy({ profile, engine, size, selection, workloads: o.workloads, dir, signal, onProgress }),
      );
    } catch (err) {
      // Another engine's failure does not throw away what vdisk measured.
      if (reports.length === 0 || !isVdiskError(err) || err.code === 'ESHUTDOWN') throw err;
      streams.err(`vdisk: study: ${engineTitle(engine)} could not be measured: ${err.message}\n`);
      notMeasured.push({ engine, reason: err.message });
      continue;
    }
    const report = studyReport(run, o.command);
    reports.push(report);
    printRun(streams, report);
  }
  const doc: StudyDocument = engineChoice === 'both' ? enginesReport(reports, notMeasured, o.command) : reports[0]!;
  await writeReports(o.files, doc);
  if ('engines' in doc && doc.agreement.length > 0) streams.out(`\n${agreementLine(doc.agreement)}`);
  printPaths(streams, o.files);
  return 0;
}

async function compare(values: Values, files: string[], streams: CliStreams): Promise<number> {
  const other = Object.keys(values).find((k) => k !== 'compare' && values[k] !== undefined);
  if (other) throw usageError('study', `--compare measures nothing: --${other} does not apply`);
  if (files.length < 1 || files.length > 2) throw usageError('study', '--compare takes one or two study JSON files');
  const comparisons = await compareStudyFiles(files);
  streams.out(comparisons.map(comparisonText).join('\n'));
  return 0;
}

/** Runs a study with the progress bar, interrupted cleanly by SIGINT or SIGTERM. */
async function withProgress<T>(
  streams: CliStreams,
  fn: (signal: AbortSignal, onProgress: (p: StudyProgress) => void) => Promise<T>,
): Promise<T> {
  const abort = new AbortController();
  const onSignal = () => abort.abort(new VdiskError('ESHUTDOWN', 'Interrupted; the temporary images were removed'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = progressBar(streams, { tty: Boolean(process.stderr.isTTY), columns: process.stderr.columns });
  try {
    return await fn(abort.signal, (p) => bar.update(p.done, p.total, `${p.combination.id} ${p.step}`));
  } finally {
    bar.finish();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function writeReports(files: { json: string; html: string }, doc: StudyDocument): Promise<void> {
  await writeJsonReport(files.json, doc);
  await writeHtmlReport(files.html, doc);
}

/** One engine's table, recommendation and circumstances. */
function printRun(streams: CliStreams, report: StudyReport): void {
  streams.out(`\n${formatTable(report)}${tableLegend(report)}\n`);
  for (const paragraph of report.recommendation.text) streams.out(`${paragraph}\n\n`);
  const fs = report.filesystem;
  const where = fs
    ? `${fs.type} (${fs.device ?? 'unknown device'}${fs.rotational === null ? '' : `, ${fs.rotational ? '' : 'non-'}rotational says the kernel`})`
    : `the NBD export ${report.server?.uri ?? '?'}, with its server's settings`;
  streams.out(`Measured on ${where} in ${Math.round(report.seconds)} s.\n`);
  const busy = busyNote(report.load, report.machine.cpus, report.profile.rounds);
  if (busy) streams.out(`${busy}\n`);
}

function printPaths(streams: CliStreams, files: { json: string; html: string }): void {
  streams.out(`JSON: ${path.resolve(files.json)}\nHTML: ${path.resolve(files.html)}\n`);
}
