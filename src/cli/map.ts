/** `vdisk map`: qemu-img map's arguments and both of its output layouts. */

import { formatDefinition } from '../engine/formats.js';
import { mapImage } from '../tools/map.js';
import { parseSize } from '../tools/size.js';
import { type CliCommand, oneFilename, outputFormat, parseCommandLine } from './args.js';
import { formatMapHuman, formatMapJson } from './render/map.js';

const HELP = `usage: vdisk map [-f fmt] [--output=human|json] [--start-offset=OFFSET] [--max-length=LEN] [-U] filename

Shows which ranges of an image hold data, read as zeros or are unallocated, and where
they are in the host file, as qemu-img map does. The image is opened read-only.

  -f fmt               image format; without it the format is probed
  --output=FMT         human (default: only ranges with data) or json (every range)
  --start-offset=OFF   start at this guest offset
  --max-length=LEN     report at most this many bytes
  -U                   force share: do not take the image lock
`;

export const mapCommand: CliCommand = {
  name: 'map',
  summary: 'map [-f fmt] [--output=human|json] [-U] filename   show where the data is',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('map', args, {
      format: { type: 'string', short: 'f' },
      output: { type: 'string' },
      'start-offset': { type: 'string' },
      'max-length': { type: 'string' },
      'force-share': { type: 'boolean', short: 'U' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
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
    });
    streams.out(output === 'json' ? formatMapJson(entries) : formatMapHuman(entries));
    return 0;
  },
};
