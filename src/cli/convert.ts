/** `vdisk convert`: qemu-img convert's arguments. */
import { parseCacheModeName } from '../block/cache-mode.js';
import { formatDefinition } from '../engine/formats.js';
import { convertImage } from '../tools/convert.js';
import { parseSize } from '../tools/size.js';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from './args.js';
import { commandHelp } from './help.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';
import { progressPrinter } from './progress.js';

const SPEC: CommandSpec = {
  name: 'convert',
  operands: 'filename output_filename',
  purpose: 'copy an image into any format (qemu-img convert)',
  description: `
Copies an image into a new image of any format, as qemu-img convert does: ranges that read as
zeros are not written, -c stores every cluster compressed (qcow2), and the target is written with
cache=unsafe and made durable once at the end unless -t says otherwise. A new target is built in
an unnamed file and named only when complete: a convert that fails leaves no file, or the old
file of that name as it was.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'source format (probed when absent)' },
    'output-format': { type: 'string', short: 'O', arg: 'output_fmt', help: 'output format (default raw)' },
    options: {
      type: 'string',
      short: 'o',
      arg: 'options',
      multiple: true,
      help: 'creation options of the output format (see vdisk create -o help)',
    },
    compress: { type: 'boolean', short: 'c', help: 'store every cluster compressed (qcow2)' },
    sparse: {
      type: 'string',
      short: 'S',
      arg: 'sparse_size',
      help: 'smallest run of zeros left unwritten (default 4k; 0 writes everything)',
    },
    cache: { type: 'string', short: 't', arg: 'cache', help: 'cache mode of the target (default unsafe)' },
    'source-cache': {
      type: 'string',
      short: 'T',
      arg: 'src_cache',
      help: 'cache mode of the source (default writeback)',
    },
    'no-create': { type: 'boolean', short: 'n', help: 'write into an existing target instead of creating it' },
    parallel: { type: 'string', short: 'm', arg: 'num', help: 'requests in flight (1 to 16, default 8)' },
    progress: { type: 'boolean', short: 'p', help: 'show progress' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but errors' },
    'force-share': { type: 'boolean', short: 'U', help: 'read a source another process holds, without the image lock' },
    ...NBD_CLIENT_OPTIONS,
  },
};

export const convertCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (values.help) {
      streams.out(commandHelp(SPEC));
      return 0;
    }
    if (positionals.length !== 2) throw usageError('convert', 'Expecting one source and one target file name');
    const [source, target] = positionals as [string, string];
    const targetCache = values.cache === undefined ? undefined : parseCacheModeName(values.cache as string);
    const sourceCache =
      values['source-cache'] === undefined ? undefined : parseCacheModeName(values['source-cache'] as string);
    const parallel = values.parallel === undefined ? 8 : Number(values.parallel);
    if (!Number.isInteger(parallel) || parallel < 1 || parallel > 16) {
      throw usageError('convert', 'Invalid number of coroutines. Allowed number of coroutines is between 1 and 16');
    }
    const progress = values.progress && !values.quiet ? progressPrinter(streams) : undefined;
    const outputFormat = (values['output-format'] as string | undefined) ?? 'raw';
    await convertImage({
      source,
      target,
      sourceFormat: values.format === undefined ? 'probe' : formatDefinition(values.format as string).name,
      targetFormat: formatDefinition(outputFormat).name,
      options: (values.options as string[] | undefined) ?? [],
      compress: Boolean(values.compress),
      minSparse: values.sparse === undefined ? undefined : parseSize(values.sparse as string),
      targetCache,
      sourceCache,
      noCreate: Boolean(values['no-create']),
      forceShare: Boolean(values['force-share']),
      nbd: nbdClientOptions('convert', values),
      parallel,
      onProgress: progress?.update,
    }).finally(() => progress?.finish());
    return 0;
  },
};
