/** `vdisk resize`: qemu-img resize's arguments. */
import { parsePreallocation } from '../block/preallocation.js';
import { formatDefinition } from '../engine/formats.js';
import { resizeImage } from '../tools/resize.js';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from './args.js';

const SPEC: CommandSpec = {
  name: 'resize',
  operands: 'filename [+|-]size',
  purpose: 'change the virtual size (qemu-img resize)',
  description: `
Changes the virtual size of an image, as qemu-img resize does: to the size given, or by it with
+ or -. Growth is allocated as --preallocation says; shrinking deletes everything past the new
end and needs --shrink.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    preallocation: {
      type: 'string',
      arg: 'PREALLOC',
      help: 'how the new tail is allocated: off (default), metadata (qcow2), falloc, full',
    },
    shrink: { type: 'boolean', help: 'allow a smaller size (the data past the new end is lost)' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but errors' },
  },
};

export const resizeCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (positionals.length !== 2) throw usageError('resize', 'Expecting a file name and a size');
    const [filename, size] = positionals as [string, string];
    const format = values.format as string | undefined;
    if (values.shrink && size.startsWith('-')) {
      streams.err(
        "vdisk: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.\n",
      );
    }
    await resizeImage(filename, {
      format: format === undefined ? 'probe' : formatDefinition(format).name,
      size,
      preallocation: values.preallocation === undefined ? 'off' : parsePreallocation(values.preallocation as string),
      shrink: Boolean(values.shrink),
    });
    if (!values.quiet) streams.out('Image resized.\n');
    return 0;
  },
};
