/** `vdisk info`: qemu-img info's arguments and both of its output layouts. */
import { formatDefinition } from '../format/registry.js';
import { formatInfoHuman, formatInfoJson, imageInfo } from '../tools/info.js';
import { type CliCommand, oneFilename, outputFormat, parseCommandLine } from './args.js';

const HELP = `usage: vdisk info [-f fmt] [--output=human|json] [-U] filename

Shows an image's format, virtual size and disk use, as qemu-img info does.
The image is opened read-only.

  -f fmt         image format; without it the format is probed from the first bytes
  --output=FMT   human (default) or json (the same JSON as qemu-img info --output=json)
  -U             force share: do not take the image lock (the image may be in use)
`;

export const infoCommand: CliCommand = {
  name: 'info',
  summary: 'info [-f fmt] [--output=human|json] [-U] filename   show format, size and disk use',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('info', args, {
      format: { type: 'string', short: 'f' },
      output: { type: 'string' },
      'force-share': { type: 'boolean', short: 'U' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
    const output = outputFormat(values.output);
    const filename = oneFilename('info', positionals);
    const format = values.format as string | undefined;
    const info = await imageInfo(filename, {
      format: format === undefined ? 'probe' : formatDefinition(format).name,
      lock: !values['force-share'],
    });
    streams.out(output === 'json' ? formatInfoJson(info) : formatInfoHuman(info));
    return 0;
  },
};
