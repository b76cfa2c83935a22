/** `vdisk map`: qemu-img map's arguments and both of its output layouts. */

import { formatDefinition } from '../engine/formats.js';
import { mapImage } from '../tools/map.js';
import { parseSize } from '../tools/size.js';
import { type CliCommand, type CommandSpec, oneFilename, outputFormat, parseCommandLine } from './args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';
import { formatMapHuman, formatMapJson } from './render/map.js';

const SPEC: CommandSpec = {
  name: 'map',
  operands: 'filename',
  purpose: 'show where the data is (qemu-img map)',
  description: `
Shows which ranges of an image hold data, read as zeros or are unallocated, and where they are
in the host file, as qemu-img map does. The image is opened read-only.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    output: {
      type: 'string',
      arg: 'human|json',
      help: 'human (default: only ranges with data) or json (every range, as qemu-img map --output=json)',
    },
    'start-offset': { type: 'string', arg: 'OFFSET', help: 'start at this guest offset' },
    'max-length': { type: 'string', arg: 'LEN', help: 'report at most this many bytes' },
    'force-share': { type: 'boolean', short: 'U', help: 'read an image another process holds, without the image lock' },
    ...NBD_CLIENT_OPTIONS,
  },
};

export const mapCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const output = outputFormat(values.output);
    const start =
      values['start-offset'] === undefined ? undefined : parseSize(values['start-offset'] as string, 'start offset');
    const length =
      values['max-length'] === undefined ? undefined : parseSize(values['max-length'] as string, 'max length');
    const filename = oneFilename('map', positionals);
    const format = values.format as string | undefined;
    const entries = await mapImage(filename, {
      start,
      length,
      format: format === undefined ? 'probe' : formatDefinition(format).name,
      forceShare: Boolean(values['force-share']),
      nbd: nbdClientOptions('map', values),
    });
    streams.out(output === 'json' ? formatMapJson(entries) : formatMapHuman(entries));
    return 0;
  },
};
