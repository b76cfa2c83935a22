/** `vdisk study`: what cache mode and preallocation do to guest I/O on this machine's storage. */
import path from 'node:path';
import { CACHE_MODE_NAMES } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { formatSize, parseSize } from '../tools/size.js';
import { busyNote } from '../tools/study/machine.js';
import { ALL_PREALLOCATIONS, PROFILES, parseNameList, STUDY_FORMATS, studyMatrix } from '../tools/study/matrix.js';
import { writeHtmlReport } from '../tools/study/report-html.js';
import { studyReport, writeJsonReport } from '../tools/study/report-json.js';
import { runStudy } from '../tools/study/runner.js';
import { formatTable } from '../tools/study/table.js';
import { WORKLOAD_NAMES, WORKLOADS } from '../tools/study/workloads.js';
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
    const combinations = studyMatrix(selection).length;
    const now = new Date();
    const jsonFile = (values.json as string | undefined) ?? `vdisk-study-${stamp(now)}.json`;
    const htmlFile = (values.html as string | undefined) ?? `vdisk-study-${stamp(now)}.html`;
    const dir = path.resolve((values.dir as string | undefined) ?? '.');

    streams.out(
      `vdisk study (${profile.name}): ${plural(combinations, 'combination')} × ${plural(workloads.length, 'workload')}` +
        `${profile.rounds > 1 ? ` × ${profile.rounds} rounds` : ''}, ${formatSize(size)} images in ${dir}\n`,
    );
    const abort = new AbortController();
    const onSignal = () => abort.abort(new VdiskError('ESHUTDOWN', 'Interrupted; the temporary images were removed'));
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const bar = progressBar(streams, { tty: Boolean(process.stderr.isTTY), columns: process.stderr.columns });
    let run: Awaited<ReturnType<typeof runStudy>>;
    try {
      run = await runStudy({
        profile,
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
    const report = studyReport(run, ['vdisk', 'study', ...args].join(' '));
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
    return 0;
  },
};
