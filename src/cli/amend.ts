/** `vdisk amend`: qemu-img amend's arguments and exit status. */
import { amendImage, amendOptionHelp } from '../tools/amend.js';
import { hasHelpOption, joinOptionLists } from '../tools/options.js';
import { type CliCommand, type CommandSpec, oneFilename, parseCommandLine } from './args.js';
import { formatOption } from './format-option.js';
import { withProgress } from './progress.js';

const SPEC: CommandSpec = {
  name: 'amend',
  operands: '-o options filename',
  purpose: "change an image's options in place (qemu-img amend)",
  description: `
Changes options of an existing image, as qemu-img amend does. qcow2: compat (0.10 or 1.1; a
downgrade refuses what version 2 cannot hold, and first turns zero clusters into zero data over a
backing file, unallocated clusters without one),
lazy_refcounts, refcount_bits (the refcount structure is written anew at the end of the file and
switched to in one header write) and size. Use rebase to change the backing file. "-o help"
lists the options.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    options: {
      type: 'string',
      short: 'o',
      arg: 'options',
      multiple: true,
      help: 'comma-separated name=value options to change ("-o help" lists them)',
    },
    force: { type: 'boolean', help: 'allow changes that may lose data' },
    progress: { type: 'boolean', short: 'p', help: 'show progress' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but errors' },
  },
};

export const amendCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const lists = (values.options as string[] | undefined) ?? [];
    const text = joinOptionLists(lists);
    if (text !== '' && hasHelpOption(text)) {
      streams.out(amendOptionHelp((values.format as string | undefined) ?? 'qcow2'));
      return 0;
    }
    const filename = oneFilename('amend', positionals);
    const quiet = Boolean(values.quiet);
    await withProgress(Boolean(values.progress) && !quiet, streams, (onProgress) =>
      amendImage(filename, {
        format: formatOption(values.format),
        options: lists,
        force: Boolean(values.force),
        onProgress,
      }),
    );
    return 0;
  },
};
