/** `vdisk check`: qemu-img check's arguments, messages, both output layouts and exit statuses. */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { checkExitCode, checkImage } from '../tools/check.js';
import { type CliCommand, type CommandSpec, oneFilename, outputFormat, parseCommandLine } from './args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';
import { formatCheckHuman, formatCheckJson, formatRepairedHuman } from './render/check.js';

const SPEC: CommandSpec = {
  name: 'check',
  operands: 'filename',
  purpose: 'check an image and repair it (qemu-img check)',
  description: `
Checks an image for consistency, and repairs it with -r, as qemu-img check does. Problems found
are printed on stderr, the summary on stdout. Repair opens the image read-write; keep a copy of
an image you care about.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    output: {
      type: 'string',
      arg: 'human|json',
      help: 'human (default) or json (the JSON of qemu-img check --output=json)',
    },
    repair: {
      type: 'string',
      short: 'r',
      arg: 'leaks|all',
      help: 'leaks: free leaked clusters; all: repair every kind of error, rebuilding the refcounts if broken',
    },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print no summary' },
    'force-share': {
      type: 'boolean',
      short: 'U',
      help: 'check an image another process holds, without the image lock (not with -r)',
    },
    ...NBD_CLIENT_OPTIONS,
  },
  exitStatus: [
    [0, 'no errors'],
    [1, 'the check could not be completed'],
    [2, 'the image is corrupted'],
    [3, 'leaked clusters only'],
    [63, 'the format has no checks (raw)'],
  ],
};

export const checkCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const repair = values.repair as string | undefined;
    if (repair !== undefined && repair !== 'leaks' && repair !== 'all') {
      throw new VdiskError('EINVAL', `Unknown option value for -r (expecting 'leaks' or 'all'): ${repair}`);
    }
    const output = outputFormat(values.output);
    const filename = oneFilename('check', positionals);
    const format = values.format as string | undefined;
    const quiet = Boolean(values.quiet);
    const outcome = await checkImage(filename, {
      format: format === undefined ? 'probe' : formatDefinition(format).name,
      repair,
      forceShare: Boolean(values['force-share']),
      nbd: nbdClientOptions('check', values),
      onMessage: (line) => streams.err(`${line}\n`),
    });
    if (outcome.unsupported) {
      streams.err('vdisk: This image format does not support checks\n');
      return checkExitCode(outcome);
    }
    if (outcome.repaired && output === 'human' && !quiet) streams.out(formatRepairedHuman(outcome.repaired));
    if (outcome.report && outcome.failure === undefined && !quiet) {
      streams.out(output === 'json' ? formatCheckJson(outcome.report) : formatCheckHuman(outcome.report));
    }
    const status = checkExitCode(outcome);
    if (status === 1) {
      streams.err(
        outcome.failure !== undefined ? `vdisk: Check failed: ${outcome.failure}\n` : 'vdisk: Check failed\n',
      );
    }
    return status;
  },
};
