/** `vdisk dd`: qemu-img dd's options, operands (bs=, count=, skip=, if=, of=) and messages. */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { ddImage, MAX_DD_BLOCK_SIZE } from '../tools/dd.js';
import { INT64_MAX } from '../tools/size.js';
import { type CliCommand, type CommandSpec, parseCommandLine } from './args.js';
import { sizeArgument } from './numbers.js';

const SPEC: CommandSpec = {
  name: 'dd',
  operands: '[bs=block_size] [count=blocks] [skip=blocks] if=input of=output',
  purpose: 'copy part of an image into a new image (qemu-img dd)',
  description: `
Copies an image, or part of it, into a new image, as qemu-img dd does: blocks of bs bytes
(default 512), skipping the first skip blocks of the input, up to block count counted from the
start of the input (qemu-img's reading of count). Every byte is written, zeros too. The output
is created (an existing file is replaced) in the format -O gives; it is built out of sight and
named once complete.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'input format (probed when absent)' },
    'output-format': { type: 'string', short: 'O', arg: 'output_fmt', help: 'output format (default raw)' },
    'force-share': { type: 'boolean', short: 'U', help: 'read an input another process holds, without the image lock' },
  },
  notes: `
Operands: if=FILE the input, of=FILE the output, bs=SIZE bytes per block (1 to 2147483647,
suffixes k, M, G, T, P, E), count=N and skip=N blocks (suffixes too). A skip past the end of
the input makes an empty output, with a warning, as in qemu-img.`,
};

interface Operands {
  input?: string;
  output?: string;
  bs?: bigint;
  count?: bigint;
  skip?: bigint;
}

/** The operands, checked in order as qemu-img does: the first bad one is the one reported. */
function parseOperands(positionals: readonly string[]): Operands {
  const operands: Operands = {};
  for (const operand of positionals) {
    const eq = operand.indexOf('=');
    const key = eq < 0 ? operand : operand.slice(0, eq);
    const value = operand.slice(eq + 1);
    if (eq < 0) throw new VdiskError('EINVAL', `unrecognized operand ${key}`);
    if (key === 'if') operands.input = value;
    else if (key === 'of') operands.output = value;
    else if (key === 'bs' || key === 'count' || key === 'skip')
      operands[key] = sizeArgument(
        key,
        value,
        key === 'bs' ? 1n : 0n,
        key === 'bs' ? BigInt(MAX_DD_BLOCK_SIZE) : INT64_MAX,
      );
    else throw new VdiskError('EINVAL', `unrecognized operand ${key}`);
  }
  return operands;
}

export const ddCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const operands = parseOperands(positionals);
    if (!operands.input || !operands.output) {
      throw new VdiskError('EINVAL', 'Must specify both input and output files');
    }
    const outputFormat = formatDefinition((values['output-format'] as string | undefined) ?? 'raw').name;
    await ddImage({
      input: operands.input,
      output: operands.output,
      inputFormat: values.format === undefined ? 'probe' : formatDefinition(values.format as string).name,
      outputFormat,
      blockSize: operands.bs === undefined ? undefined : Number(operands.bs),
      count: operands.count,
      skip: operands.skip,
      forceShare: Boolean(values['force-share']),
      onWarning: (message) => streams.err(`vdisk: ${message}\n`),
    });
    return 0;
  },
};
