/** `vdisk info`: qemu-img info's arguments and both of its output layouts. */
import { formatDefinition } from '../engine/formats.js';
import { imageChainInfo, imageInfo } from '../tools/info.js';
import { type CliCommand, oneFilename, outputFormat, parseCommandLine } from './args.js';
import { formatChainJson, formatInfoHuman, formatInfoJson } from './render/info.js';

const HELP = `usage: vdisk info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename

Shows an image's format, virtual size and disk use, as qemu-img info does.
The image is opened read-only.

  -f fmt         image format; without it the format is probed from the first bytes
  --output=FMT   human (default) or json (the same JSON as qemu-img info --output=json)
  --backing-chain  also report every image down the backing chain
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
      'backing-chain': { type: 'boolean' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
    const output = outputFormat(values.output);
    const filename = oneFilename('info', positionals);
    const format = values.format as string | undefined;
    const options = {
      format: format === undefined ? ('probe' as const) : formatDefinition(format).name,
      forceShare: Boolean(values['force-share']),
    };
    if (values['backing-chain']) {
      const chain = await imageChainInfo(filename, options);
      streams.out(output === 'json' ? formatChainJson(chain) : chain.map(formatInfoHuman).join('\n'));
      return 0;
    }
    const info = await imageInfo(filename, options);
    streams.out(output === 'json' ? formatInfoJson(info) : formatInfoHuman(info));
    return 0;
  },
};
