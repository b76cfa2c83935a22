/** `vdisk study`: what cache mode and preallocation do to guest I/O on this machine's storage. */
import path from 'node:path';
import { CACHE_MODE_NAMES } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { formatSize, parseSize } from '../tools/size.js';
import { type Agreement, agreement } from '../tools/study/agreement.js';
import { busyNote } from '../tools/study/machine.js';
import {
  ALL_PREALLOCATIONS,
  type MatrixSelection,
  PROFILES,
  parseNameList,
  STUDY_FORMATS,
  type StudyProfile,
  studyMatrix,
} from '../tools/study/matrix.js';
import { qemuNbdInstalled } from '../tools/study/qemu-engine.js';
import { writeHtmlReport } from '../tools/study/report-html.js';
import { studyReport, writeJsonReport } from '../tools/study/report-json.js';
import { runStudy, type StudyEngine, type StudyRun } from '../tools/study/runner.js';
import { formatTable } from '../tools/study/table.js';
import { WORKLOAD_NAMES, WORKLOADS, type WorkloadName } from '../tools/study/workloads.js';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from './args.js';
import { commandHelp } from './help.js';
import { progressBar } from './progress.js';

const SPEC: CommandSpec = {
  name: 'study',
  operands: '',
  purpose: 'measure every cache mode and preallocation on this storage',
  description: `
Measures what the host cache mode and the preallocation mode do to guest I/O on this machine's
storage. For every format × preallocation × cache mode it creates a fresh image (timing the
creation), runs guest-like workloads through vdisk's block layer with requests in flight, ends
every write workload with a flush counted in its time, and records throughput, IOPS and latency
percentiles. It prints a ranked table and a recommendation that weighs speed against what a host
crash can do, and writes every measurement to a JSON file and a self-contained HTML report.
Combinations the filesystem cannot do (O_DIRECT on some filesystems) are reported, not dropped.`,
  options: {
    quick: { type: 'boolean', help: 'small images, short runs: one to two minutes (the default)' },
    full: { type: 'boolean', help: 'larger images, longer runs, three rounds: 15 to 20 minutes' },
    dir: {
      type: 'string',
      arg: 'DIR',
      help: 'where the images are made, in a temporary directory removed afterwards\n(default: the current directory, so its filesystem is the one measured)',
    },
    size: { type: 'string', arg: 'SIZE', help: 'image size (default: 256M quick, 1G full)' },
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
      help: "whose block layer to measure: vdisk's (default), QEMU's through qemu-nbd, or both,\none after the other, with how far their rankings agree",
    },
    smoke: { type: 'boolean', hidden: true, help: 'tiny, seconds-long run whose numbers mean nothing (for tests)' },
  },
  notes: `Workloads:\n${WORKLOADS.map((w) => `  ${w.name.padEnd(11)} ${w.title}`).join('\n')}`,
};

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/\.\d+Z$/, '')
    .replace(/:/g, '-');
}

export const studyCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (values.help) {
      streams.out(commandHelp(SPEC));
      return 0;
    }
    if (positionals.length > 0) throw usageError('study', `Unexpected argument: ${positionals[0]}`);
    if ([values.quick, values.full, values.smoke].filter(Boolean).length > 1) {
      throw usageError('study', 'Choose one of --quick, --full and --smoke');
    }
    const profile = PROFILES[values.full ? 'full' : values.smoke ? 'smoke' : 'quick'];
    const size = values.size === undefined ? profile.size : parseSize(values.size as string);
    if (size < 1024 * 1024) throw new VdiskError('EINVAL', 'The study needs images of at least 1 MiB');
    const selection = {
      formats: parseNameList((values.formats as string | undefined) ?? 'all', STUDY_FORMATS, 'format'),
      caches: parseNameList((values.cache as string | undefined) ?? 'all', CACHE_MODE_NAMES, 'cache mode'),
      preallocs: parseNameList(
        (values.prealloc as string | undefined) ?? 'all',
        ALL_PREALLOCATIONS,
        'preallocation mode',
      ),
    };
    const workloads = parseNameList((values.workloads as string | undefined) ?? 'all', WORKLOAD_NAMES, 'workload');
    const engineChoice = (values.engine as string | undefined) ?? 'vdisk';
    if (!['vdisk', 'qemu', 'both'].includes(engineChoice)) {
      throw usageError('study', `Invalid --engine: ${engineChoice} (use vdisk, qemu or both)`);
    }
    const engines: StudyEngine[] = engineChoice === 'both' ? ['vdisk', 'qemu'] : [engineChoice as StudyEngine];
    const combinations = studyMatrix(selection).length;
    const now = new Date();
    const dir = path.resolve((values.dir as string | undefined) ?? '.');

    streams.out(
      `vdisk study (${profile.name}): ${plural(combinations, 'combination')} × ${plural(workloads.length, 'workload')}` +
        `${profile.rounds > 1 ? ` × ${profile.rounds} rounds` : ''}, ${formatSize(size)} images in ${dir}\n`,
    );
    const runs: StudyRun[] = [];
    for (const engine of engines) {
      if (engine === 'qemu' && !qemuNbdInstalled()) {
        streams.err(
          'vdisk: study: qemu-nbd is not installed (Debian: apt-get install qemu-utils); QEMU was not measured\n',
        );
        if (engines.length === 1) return 1;
        continue;
      }
      // With both engines, each gets its own files: name-vdisk.json, name-qemu.json.
      const suffix = engines.length > 1 ? `-${engine}` : '';
      const named = (given: string | undefined, ext: string) =>
        given === undefined ? `vdisk-study-${stamp(now)}${suffix}${ext}` : withSuffix(given, suffix);
      const run = await studyOne(engine, {
        profile,
        size,
        selection,
        workloads,
        dir,
        jsonFile: named(values.json as string | undefined, '.json'),
        htmlFile: named(values.html as string | undefined, '.html'),
        command: ['vdisk', 'study', ...args].join(' '),
        streams,
        heading: engines.length > 1,
      });
      runs.push(run);
    }
    if (runs.length === 2) streams.out(formatAgreement(agreement(runs[0]!, runs[1]!)));
    return 0;
  },
};

interface StudyOne {
  profile: StudyProfile;
  size: number;
  selection: MatrixSelection;
  workloads: WorkloadName[];
  dir: string;
  jsonFile: string;
  htmlFile: string;
  command: string;
  streams: Parameters<CliCommand['run']>[1];
  /** Say which engine the table is for. */
  heading: boolean;
}

function withSuffix(file: string, suffix: string): string {
  const ext = path.extname(file);
  return `${file.slice(0, file.length - ext.length)}${suffix}${ext}`;
}

/** ρ per workload and overall, as a short paragraph. */
function formatAgreement(rows: readonly Agreement[]): string {
  const cell = (r: Agreement) => `${r.what} ${r.rho === null ? '-' : r.rho.toFixed(2)}`;
  const n = Math.max(...rows.map((r) => r.n));
  return (
    `vdisk against QEMU on this storage: Spearman's ρ of the rankings of ${plural(n, 'combination')} ` +
    `(1: the same order): ${rows.map(cell).join(', ')}\n`
  );
}

async function studyOne(engine: StudyEngine, o: StudyOne): Promise<StudyRun> {
  const { profile, size, selection, workloads, dir, jsonFile, htmlFile, streams } = o;
  if (o.heading) streams.out(`\n${engine === 'qemu' ? 'QEMU (qemu-nbd, through the NBD client)' : 'vdisk'}:\n`);
  const abort = new AbortController();
  const onSignal = () => abort.abort(new VdiskError('ESHUTDOWN', 'Interrupted; the temporary images were removed'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = progressBar(streams, { tty: Boolean(process.stderr.isTTY), columns: process.stderr.columns });
  let run: Awaited<ReturnType<typeof runStudy>>;
  try {
    run = await runStudy({
      profile,
      engine,
      size,
      selection,
      workloads,
      dir,
      signal: abort.signal,
      onProgress: (p) => bar.update(p.done, p.total, `${p.combination.id} ${p.step}`),
    });
  } finally {
    bar.finish();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const report = studyReport(run, o.command);
  await writeJsonReport(jsonFile, report);
  await writeHtmlReport(htmlFile, report);

  streams.out(`\n${formatTable(run)}\n`);
  for (const paragraph of report.recommendation.text) streams.out(`${paragraph}\n\n`);
  const fs = run.filesystem;
  streams.out(
    `Measured on ${fs.type} (${fs.device ?? 'unknown device'}${fs.rotational === null ? '' : `, ${fs.rotational ? '' : 'non-'}rotational says the kernel`}) ` +
      `in ${Math.round(run.seconds)} s.\n`,
  );
  const busy = busyNote(run.load, run.machine.cpus, run.profile.rounds);
  if (busy) streams.out(`${busy}\n`);
  streams.out(`JSON: ${path.resolve(jsonFile)}\nHTML: ${path.resolve(htmlFile)}\n`);
  return run;
}
