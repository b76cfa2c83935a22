/** `vdisk info`: qemu-img info's arguments and both of its output layouts. */
import { formatDefinition } from '../engine/formats.js';
import { imageChainInfo, imageInfo } from '../tools/info.js';
import { type CliCommand, type CommandSpec, oneFilename, outputFormat, parseCommandLine } from './args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';
import { formatChainJson, formatInfoHuman, formatInfoJson } from './render/info.js';

const SPEC: CommandSpec = {
  name: 'info',
  operands: 'filename',
  purpose: 'show format, size and disk use (qemu-img info)',
  description: `
Shows an image's format, virtual size, disk use, backing file and format-specific facts, as
qemu-img info does. The image is opened read-only; its backing file need not exist.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    output: {
      type: 'string',
      arg: 'human|json',
      help: 'human (default) or json (the JSON of qemu-img info --output=json)',
    },
    'backing-chain': { type: 'boolean', help: 'also report every image down the backing chain' },
    'force-share': { type: 'boolean', short: 'U', help: 'read an image another process holds, without the image lock' },
    ...NBD_CLIENT_OPTIONS,
  },
};

export const infoCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const output = outputFormat(values.output);
    const filename = oneFilename('info', positionals);
    const format = values.format as string | undefined;
    const options = {
      format: format === undefined ? ('probe' as const) : formatDefinition(format).name,
      forceShare: Boolean(values['force-share']),
      nbd: nbdClientOptions('info', values),
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
