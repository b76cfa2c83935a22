/** `vdisk compare`: qemu-img compare's arguments, messages and exit codes (0 same, 1 different, 2 error). */
import { parseCacheModeName } from '../block/cache-mode.js';
import { isVdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { compareImages } from '../tools/compare.js';
import { type CliCommand, parseCommandLine, usageError } from './args.js';
import { progressPrinter } from './progress.js';
import { describeCompare } from './render/compare.js';

const HELP = `usage: vdisk compare [-f fmt] [-F fmt] [-T cache] [-p] [-q] [-s] [-U] filename1 filename2

Checks whether two images read the same, as qemu-img compare does. Exit status: 0 identical,
1 different (the first differing offset is named), 2 an image could not be opened or read.

  -f fmt, -F fmt   formats of the first and second image (probed when absent)
  -s               strict: sizes and allocation must match too
  -p               show progress
`;

export const compareCommand: CliCommand = {
  name: 'compare',
  summary: 'compare [-f fmt] [-F fmt] [-s] [-p] filename1 filename2   compare two images',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('compare', args, {
      format: { type: 'string', short: 'f' },
      'second-format': { type: 'string', short: 'F' },
      cache: { type: 'string', short: 'T' },
      progress: { type: 'boolean', short: 'p' },
      quiet: { type: 'boolean', short: 'q' },
      strict: { type: 'boolean', short: 's' },
      'force-share': { type: 'boolean', short: 'U' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
    if (positionals.length !== 2) throw usageError('compare', 'Expecting two image file names');
    const fmt = (v: unknown) => (v === undefined ? 'probe' : formatDefinition(v as string).name);
    const progress = values.progress && !values.quiet ? progressPrinter(streams) : undefined;
    try {
      const result = await compareImages(positionals[0]!, positionals[1]!, {
        formatA: fmt(values.format),
        formatB: fmt(values['second-format']),
        strict: Boolean(values.strict),
        cache: values.cache === undefined ? undefined : parseCacheModeName(values.cache as string),
        forceShare: Boolean(values['force-share']),
        onProgress: progress?.update,
      });
      progress?.finish();
      const { lines, exitCode } = describeCompare(result);
      if (!values.quiet) streams.out(`${lines.join('\n')}\n`);
      return exitCode;
    } catch (err) {
      progress?.finish();
      if (!isVdiskError(err)) throw err;
      streams.err(`vdisk: ${err.message}\n`);
      return 2;
    }
  },
};
