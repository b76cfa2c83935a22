/** `vdisk compare`: qemu-img compare's arguments, messages and exit codes (0 same, 1 different, 2 error). */
import { parseCacheModeName } from '../block/cache-mode.js';
import { isVdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { compareImages } from '../tools/compare.js';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from './args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';
import { progressPrinter } from './progress.js';
import { describeCompare } from './render/compare.js';

const SPEC: CommandSpec = {
  name: 'compare',
  operands: 'filename1 filename2',
  purpose: 'compare two images (qemu-img compare)',
  description: `
Checks whether two images read the same, as qemu-img compare does; the first differing offset is
named. Ranges both images report as zeros are not read.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'format of the first image (probed when absent)' },
    'second-format': {
      type: 'string',
      short: 'F',
      arg: 'fmt',
      help: 'format of the second image (probed when absent)',
    },
    cache: { type: 'string', short: 'T', arg: 'cache', help: 'cache mode of both images (default writeback)' },
    strict: { type: 'boolean', short: 's', help: 'strict: sizes and allocation must match too' },
    progress: { type: 'boolean', short: 'p', help: 'show progress' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing, only set the exit status' },
    'force-share': { type: 'boolean', short: 'U', help: 'read images another process holds, without the image lock' },
    ...NBD_CLIENT_OPTIONS,
  },
  exitStatus: [
    [0, 'identical'],
    [1, 'different'],
    [2, 'an image could not be opened or read'],
  ],
};

export const compareCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
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
        nbd: nbdClientOptions('compare', values),
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
