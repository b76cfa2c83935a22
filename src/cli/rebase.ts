/** `vdisk rebase`: qemu-img rebase's arguments and exit status. */
import { parseCacheModeName } from '../block/cache-mode.js';
import { rebaseImage } from '../tools/chain/rebase.js';
import { type CliCommand, type CommandSpec, oneFilename, parseCommandLine, usageError } from './args.js';
import { formatOption } from './format-option.js';
import { withProgress } from './progress.js';

const SPEC: CommandSpec = {
  name: 'rebase',
  operands: '-b backing_file filename',
  purpose: 'name another backing file (qemu-img rebase)',
  description: `
Makes an overlay name another backing file, as qemu-img rebase does. In safe mode (the default)
every range the overlay does not hold itself and where the old backing chain and the new backing
file read differently is first copied into the overlay, so it reads exactly as before; then the
header names the new file. -u only rewrites the name and format (the new backing file must read
as the old one did). -b "" removes the backing file: the overlay takes in everything it read from
it. The new name is stored as given, relative to the overlay's directory.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'format of the overlay; without it the format is probed' },
    cache: { type: 'string', short: 't', arg: 'cache', help: 'cache mode of the overlay (default writeback)' },
    'source-cache': {
      type: 'string',
      short: 'T',
      arg: 'src_cache',
      help: 'cache mode of the old and new backing files (default writeback)',
    },
    backing: { type: 'string', short: 'b', arg: 'backing_file', help: 'the new backing file ("" for none)' },
    'backing-format': {
      type: 'string',
      short: 'F',
      arg: 'backing_fmt',
      help: "the new backing file's format (needed with a backing file)",
    },
    unsafe: { type: 'boolean', short: 'u', help: 'unsafe: only rewrite the backing file name and format' },
    progress: { type: 'boolean', short: 'p', help: 'show progress' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but errors' },
  },
};

export const rebaseCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const filename = oneFilename('rebase', positionals);
    const backing = values.backing as string | undefined;
    if (backing === undefined && !values.unsafe) {
      throw usageError('rebase', 'Must specify backing file (-b) or use unsafe mode (-u)');
    }
    const quiet = Boolean(values.quiet);
    await withProgress(Boolean(values.progress) && !quiet, streams, (onProgress) =>
      rebaseImage(filename, {
        format: formatOption(values.format),
        backing: backing ?? '',
        backingFormat: values['backing-format'] as string | undefined,
        unsafe: Boolean(values.unsafe),
        cache: values.cache === undefined ? undefined : parseCacheModeName(values.cache as string),
        sourceCache:
          values['source-cache'] === undefined ? undefined : parseCacheModeName(values['source-cache'] as string),
        onProgress,
      }),
    );
    return 0;
  },
};
