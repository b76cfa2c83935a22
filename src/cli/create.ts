/** `vdisk create`: qemu-img create's arguments and output. */
import { createOptionHelp, executeCreate, planCreateWithBacking } from '../tools/create.js';
import { hasHelpOption, joinOptionLists } from '../tools/options.js';
import { formatFixed } from '../util/printf.js';
import { type CliCommand, parseCommandLine, usageError } from './args.js';

const HELP = `usage: vdisk create [-f fmt] [-b backing_file -F backing_fmt] [-o options]... [-p] [-q] filename [size]

Creates a new image of the given format (default raw) and virtual size.

  -f fmt       image format: raw (default) or qcow2
  -b file      backing file (qcow2), named relative to the new image; -F gives its format
  -o options   comma-separated name=value options ("-o help" lists them);
               raw: preallocation=off|falloc|full; qcow2: cluster_size, preallocation
               (off|metadata|falloc|full), compat, lazy_refcounts, refcount_bits, extended_l2…
  -p           show progress while preallocating
  -q           quiet: print nothing but errors
  size         bytes, or with a suffix k, M, G, T, P, E (powers of 1024): 64M, 1.5G

An existing file is truncated and recreated, as qemu-img does.
`;

export const createCommand: CliCommand = {
  name: 'create',
  summary: 'create [-f fmt] [-o options] [-q] filename [size]   make a new image',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('create', args, {
      format: { type: 'string', short: 'f' },
      options: { type: 'string', short: 'o', multiple: true },
      progress: { type: 'boolean', short: 'p' },
      quiet: { type: 'boolean', short: 'q' },
      backing: { type: 'string', short: 'b' },
      'backing-format': { type: 'string', short: 'F' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
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
    const plan = await planCreateWithBacking({ filename, format, size, options: optionText });
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
