/** `vdisk resize`: qemu-img resize's arguments. */
import { parsePreallocation } from '../block/preallocation.js';
import { formatDefinition } from '../engine/formats.js';
import { resizeImage } from '../tools/resize.js';
import { type CliCommand, parseCommandLine, usageError } from './args.js';

const HELP = `usage: vdisk resize [-f fmt] [--preallocation=PREALLOC] [--shrink] [-q] filename [+|-]size

Changes the virtual size of an image, as qemu-img resize does. Growth is allocated as
--preallocation says (off, metadata for qcow2, falloc, full); shrinking deletes everything
past the new end and needs --shrink.
`;

export const resizeCommand: CliCommand = {
  name: 'resize',
  summary: 'resize [-f fmt] [--preallocation=MODE] [--shrink] filename [+|-]size   change the virtual size',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('resize', args, {
      format: { type: 'string', short: 'f' },
      preallocation: { type: 'string' },
      shrink: { type: 'boolean' },
      quiet: { type: 'boolean', short: 'q' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
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
