/** `vdisk convert`: qemu-img convert's arguments. */
import { parseCacheModeName } from '../block/cache-mode.js';
import { formatDefinition } from '../engine/formats.js';
import { convertImage } from '../tools/convert.js';
import { parseSize } from '../tools/size.js';
import { type CliCommand, parseCommandLine, usageError } from './args.js';
import { progressPrinter } from './progress.js';

const HELP = `usage: vdisk convert [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-o options] [-S sparse_size]
                     [-t cache] [-T src_cache] [-m num] [-U] filename output_filename

Copies an image into a new image of any format, as qemu-img convert does: ranges that read as
zeros are not written, -c stores every cluster compressed (qcow2), and the target is written
with cache=unsafe and made durable once at the end unless -t says otherwise.

  -f fmt          source format (probed when absent)
  -O fmt          output format (default raw)
  -o options      creation options of the output format (see vdisk create -o help)
  -S size         smallest run of zeros left unwritten (default 4k; 0 writes everything)
  -t cache        cache mode of the target (default unsafe); -T of the source (default writeback)
  -n              write into an existing target instead of creating it
  -m num          requests in flight (default 8)
  -p              show progress
`;

export const convertCommand: CliCommand = {
  name: 'convert',
  summary: 'convert [-c] [-p] [-f fmt] [-O fmt] [-o options] [-S size] filename output   copy into any format',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('convert', args, {
      format: { type: 'string', short: 'f' },
      'output-format': { type: 'string', short: 'O' },
      options: { type: 'string', short: 'o', multiple: true },
      compress: { type: 'boolean', short: 'c' },
      sparse: { type: 'string', short: 'S' },
      cache: { type: 'string', short: 't' },
      'source-cache': { type: 'string', short: 'T' },
      'no-create': { type: 'boolean', short: 'n' },
      parallel: { type: 'string', short: 'm' },
      progress: { type: 'boolean', short: 'p' },
      quiet: { type: 'boolean', short: 'q' },
      'force-share': { type: 'boolean', short: 'U' },
    });
    if (values.help) {
      streams.out(HELP);
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
      parallel,
      onProgress: progress?.update,
    }).finally(() => progress?.finish());
    return 0;
  },
};
