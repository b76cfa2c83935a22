/** `vdisk convert`: qemu-img convert's arguments. */
import { parseCacheModeName } from '../block/cache-mode.js';
import { formatDefinition } from '../engine/formats.js';
import { convertImage } from '../tools/convert.js';
import { parseSize } from '../tools/size.js';
import { parseSnapshotParam } from '../tools/snapshot-param.js';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from './args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';
import { progressPrinter } from './progress.js';

const SPEC: CommandSpec = {
  name: 'convert',
  operands: 'filename [filename2 [...]] output_filename',
  purpose: 'copy an image into any format (qemu-img convert)',
  description: `
Copies an image into a new image of any format, as qemu-img convert does: ranges that read as
zeros are not written, -c stores every cluster compressed (qcow2), and the target is written with
cache=unsafe and made durable once at the end unless -t says otherwise. A new target is built in
an unnamed file and named only when complete: a convert that fails leaves no file, or the old
file of that name as it was. Several source images are copied one after another into one
target. With -B the new image is an overlay of that backing file, and only what differs from it
is written.`,
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
    backing: {
      type: 'string',
      short: 'B',
      arg: 'backing_file',
      help: 'the new image is an overlay of this backing file (only what differs is written)',
    },
    'backing-format': {
      type: 'string',
      short: 'F',
      arg: 'backing_fmt',
      help: "the backing file's format (needed with -B)",
    },
    'target-is-zero': { type: 'boolean', help: 'with -n: the target reads as zeros already, zero ranges are skipped' },
    parallel: { type: 'string', short: 'm', arg: 'num', help: 'requests in flight (1 to 16, default 8)' },
    'out-of-order': {
      type: 'boolean',
      short: 'W',
      help: 'allow writes out of order (default: in the order of the image)',
    },
    progress: { type: 'boolean', short: 'p', help: 'show progress' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but errors' },
    'force-share': { type: 'boolean', short: 'U', help: 'read a source another process holds, without the image lock' },
    'snapshot-param': {
      type: 'string',
      short: 'l',
      arg: 'snapshot_param',
      help: "convert an internal snapshot of the source: 'snapshot.id=ID,snapshot.name=NAME' or an id or name",
    },
    bitmaps: { type: 'boolean', help: 'copy the persistent dirty bitmaps too (qcow2 to qcow2)' },
    'skip-broken-bitmaps': {
      type: 'boolean',
      help: 'with --bitmaps: leave out inconsistent bitmaps (with a warning) instead of failing',
    },
    ...NBD_CLIENT_OPTIONS,
  },
};

export const convertCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (positionals.length < 2) throw usageError('convert', 'Expecting a source and a target file name');
    const sources = positionals.slice(0, -1);
    const target = positionals[positionals.length - 1]!;
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
      source: sources,
      target,
      backing: values.backing as string | undefined,
      backingFormat: values['backing-format'] as string | undefined,
      targetIsZero: Boolean(values['target-is-zero']),
      outOfOrder: Boolean(values['out-of-order']),
      sourceFormat: values.format === undefined ? 'probe' : formatDefinition(values.format as string).name,
      targetFormat: formatDefinition(outputFormat).name,
      options: (values.options as string[] | undefined) ?? [],
      compress: Boolean(values.compress),
      minSparse: values.sparse === undefined ? undefined : parseSize(values.sparse as string),
      targetCache,
      sourceCache,
      noCreate: Boolean(values['no-create']),
      forceShare: Boolean(values['force-share']),
      snapshot:
        values['snapshot-param'] === undefined ? undefined : parseSnapshotParam(values['snapshot-param'] as string),
      nbd: nbdClientOptions('convert', values),
      parallel,
      bitmaps: Boolean(values.bitmaps),
      skipBrokenBitmaps: Boolean(values['skip-broken-bitmaps']),
      onProgress: progress?.update,
      onWarning: (message) => streams.err(`vdisk: warning: ${message}\n`),
    }).finally(() => progress?.finish());
    return 0;
  },
};
