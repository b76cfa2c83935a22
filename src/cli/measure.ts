/** `vdisk measure`: qemu-img measure's arguments and both output layouts. */
import { measureImage } from '../tools/measure.js';
import { type CliCommand, type CommandSpec, outputFormat, parseCommandLine, usageError } from './args.js';
import { formatOption } from './format-option.js';
import { toQemuJson } from './render/qemu-json.js';

const SPEC: CommandSpec = {
  name: 'measure',
  operands: '(--size size | filename)',
  purpose: 'the space a new image needs (qemu-img measure)',
  description: `
Says how much space a new image of a format needs, as qemu-img measure does: for a virtual size
(--size), or for the content of an existing image converted into it. "required size" is what
the new image takes to start with (its metadata and the data the source holds), "fully allocated
size" what it takes once every cluster is written; for qcow2 from an image that can keep
persistent bitmaps, "bitmaps size" is the space those need.`,
  options: {
    output: { type: 'string', arg: 'human|json', help: 'human (default) or json (as qemu-img measure --output=json)' },
    'output-format': { type: 'string', short: 'O', arg: 'output_fmt', help: 'format of the new image (default raw)' },
    options: {
      type: 'string',
      short: 'o',
      arg: 'options',
      multiple: true,
      help: 'creation options of the new image (cluster_size, refcount_bits, preallocation, …)',
    },
    size: { type: 'string', arg: 'N', help: 'the virtual size, instead of an image' },
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'format of the image; without it the format is probed' },
    snapshot: { type: 'string', short: 'l', arg: 'snapshot', help: 'an internal snapshot of the image' },
    'force-share': { type: 'boolean', short: 'U', help: 'read an image another process holds, without the image lock' },
  },
};

export const measureCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const output = outputFormat(values.output);
    if (positionals.length > 1) throw usageError('measure', 'Expecting one image file name');
    const result = await measureImage({
      size: values.size as string | undefined,
      source: positionals[0],
      sourceFormat: formatOption(values.format),
      snapshot: values.snapshot as string | undefined,
      forceShare: Boolean(values['force-share']),
      targetFormat: values['output-format'] as string | undefined,
      options: (values.options as string[] | undefined) ?? [],
    });
    if (output === 'json') {
      const json = { required: result.required, 'fully-allocated': result.fullyAllocated, bitmaps: result.bitmaps };
      streams.out(`${toQemuJson(json)}\n`);
    } else {
      let text = `required size: ${result.required}\nfully allocated size: ${result.fullyAllocated}\n`;
      if (result.bitmaps !== undefined) text += `bitmaps size: ${result.bitmaps}\n`;
      streams.out(text);
    }
    return 0;
  },
};
