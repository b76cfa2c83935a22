/** `vdisk create`: qemu-img create's arguments and output. */
import { createOptionHelp, executeCreate, planCreateWithBacking } from '../tools/create.js';
import { hasHelpOption, joinOptionLists } from '../tools/options.js';
import { formatFixed } from '../util/printf.js';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from './args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';

const SPEC: CommandSpec = {
  name: 'create',
  operands: 'filename [size]',
  purpose: 'make a new image (qemu-img create)',
  description: `
Creates a new image of the given format (default raw) and virtual size, as qemu-img create does.
The size is bytes, or a number with a suffix k, M, G, T, P, E (powers of 1024): 64M, 1.5G; with
a backing file and no size, the backing image's size. The image is built in an unnamed file and
gets its name only when it is complete and synced: a create that fails or is killed leaves no
file, or the old file of that name as it was.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format: raw (default) or qcow2' },
    backing: {
      type: 'string',
      short: 'b',
      arg: 'backing_file',
      help: 'backing file (qcow2), named relative to the new image',
    },
    'backing-format': {
      type: 'string',
      short: 'F',
      arg: 'backing_fmt',
      help: "the backing file's format (needed with -b)",
    },
    options: {
      type: 'string',
      short: 'o',
      arg: 'options',
      multiple: true,
      help: 'comma-separated name=value options ("-o help" lists them); raw: preallocation;\nqcow2: cluster_size, preallocation, compat, lazy_refcounts, refcount_bits, extended_l2, …',
    },
    unsafe: {
      type: 'boolean',
      short: 'u',
      help: 'do not open the backing file (it need not exist yet); the size must be given',
    },
    progress: { type: 'boolean', short: 'p', help: 'show progress while preallocating' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but errors' },
    ...NBD_CLIENT_OPTIONS,
  },
};

export const createCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const format = (values.format as string | undefined) ?? 'raw';
    const optionLists = [...((values.options as string[] | undefined) ?? [])];
    // -b and -F are spellings of the backing_file and backing_fmt options, as in qemu-img.
    if (values.backing !== undefined)
      optionLists.push(`backing_file=${(values.backing as string).replaceAll(',', ',,')}`);
    if (values['backing-format'] !== undefined) optionLists.push(`backing_fmt=${values['backing-format'] as string}`);
    const optionText = joinOptionLists(optionLists);
    if (optionText && hasHelpOption(optionText)) {
      streams.out(createOptionHelp(format, positionals[0]));
      return 0;
    }
    if (positionals.length === 0) throw usageError('create', 'Expecting image file name');
    if (positionals.length > 2) throw usageError('create', `Unexpected argument: ${positionals[2]}`);
    const [filename, size] = positionals as [string, string | undefined];
    const nbd = nbdClientOptions('create', values);
    const plan = await planCreateWithBacking({
      filename,
      format,
      size,
      options: optionText,
      unsafeBacking: Boolean(values.unsafe),
      ...(nbd ? { nbd } : {}),
    });
    const quiet = Boolean(values.quiet);
    if (!quiet) streams.out(`${plan.summary}\n`);
    const showProgress = Boolean(values.progress) && !quiet;
    let shown = -1;
    const progress = (done: number, total: number): void => {
      // qemu-img's progress line, reprinted when it moves by a whole percent.
      const percent = total > 0 ? Math.min(100, (100 * done) / total) : 100;
      if (Math.floor(percent) === shown) return;
      shown = Math.floor(percent);
      streams.out(`    (${formatFixed(percent, 2)}/100%)\r`);
    };
    if (showProgress) progress(0, 1);
    await executeCreate(plan, showProgress ? progress : undefined);
    if (showProgress) {
      progress(1, 1);
      streams.out('\n');
    }
    return 0;
  },
};
