/** `vdisk check`: qemu-img check's arguments, messages, both output layouts and exit statuses. */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { checkExitCode, checkImage } from '../tools/check.js';
import { type CliCommand, oneFilename, outputFormat, parseCommandLine } from './args.js';
import { formatCheckHuman, formatCheckJson, formatRepairedHuman } from './render/check.js';

const HELP = `usage: vdisk check [-f fmt] [--output=human|json] [-r leaks|all] [-q] [-U] filename

Checks an image for consistency, and repairs it with -r, as qemu-img check does. Problems
found are printed on stderr, the summary on stdout.

  -f fmt         image format; without it the format is probed from the first bytes
  --output=FMT   human (default) or json (the same JSON as qemu-img check --output=json)
  -r leaks       repair leaked clusters (space that is allocated but not used)
  -r all         repair every kind of error, rebuilding the refcounts if they are broken
                 (the image is opened read-write; keep a copy of an image you care about)
  -q             quiet: print no summary
  -U             force share: do not take the image lock (the image may be in use)

Exit status: 0 no errors, 1 the check could not be completed, 2 the image is corrupted,
3 leaked clusters only, 63 the format does not support checks (raw).
`;

export const checkCommand: CliCommand = {
  name: 'check',
  summary: 'check [-f fmt] [--output=human|json] [-r leaks|all] [-q] [-U] filename   check and repair',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('check', args, {
      format: { type: 'string', short: 'f' },
      output: { type: 'string' },
      repair: { type: 'string', short: 'r' },
      quiet: { type: 'boolean', short: 'q' },
      'force-share': { type: 'boolean', short: 'U' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
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
