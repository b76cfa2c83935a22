/** `vdisk commit`: qemu-img commit's arguments, message and exit status. */
import { parseCacheModeName } from '../block/cache-mode.js';
import { commitImage } from '../tools/chain/commit.js';
import { type CliCommand, type CommandSpec, oneFilename, parseCommandLine } from './args.js';
import { formatOption } from './format-option.js';
import { withProgress } from './progress.js';

const SPEC: CommandSpec = {
  name: 'commit',
  operands: 'filename',
  purpose: "write an overlay's changes into its backing file (qemu-img commit)",
  description: `
Copies the data an overlay holds into its backing file, as qemu-img commit does, then empties
the overlay so it reads through to the backing file again. With -b the data goes into that image
of the backing chain instead, and the overlay is left as it is (-b implies -d): the images
between the two no longer hold what they meant. A backing file smaller than the overlay grows to
the overlay's size. The base is flushed before the overlay is emptied, so an interruption never
changes what the overlay reads.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'format of the overlay; without it the format is probed' },
    cache: {
      type: 'string',
      short: 't',
      arg: 'cache',
      help: 'cache mode of the overlay and the base (default writeback)',
    },
    base: { type: 'string', short: 'b', arg: 'base', help: 'image of the backing chain to commit into (implies -d)' },
    drop: { type: 'boolean', short: 'd', help: 'do not empty the overlay afterwards' },
    progress: { type: 'boolean', short: 'p', help: 'show progress' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but errors' },
  },
};

export const commitCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const filename = oneFilename('commit', positionals);
    const quiet = Boolean(values.quiet);
    await withProgress(Boolean(values.progress) && !quiet, streams, (onProgress) =>
      commitImage(filename, {
        format: formatOption(values.format),
        cache: values.cache === undefined ? undefined : parseCacheModeName(values.cache as string),
        base: values.base as string | undefined,
        drop: Boolean(values.drop),
        onProgress,
      }),
    );
    if (!quiet) streams.out('Image committed.\n');
    return 0;
  },
};
