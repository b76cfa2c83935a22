/** `vdisk demo`: the end-to-end walk of demo-walk.ts. */
import { parsePreallocation } from '../block/preallocation.js';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from './args.js';
import { runDemo } from './demo-walk.js';

const SPEC: CommandSpec = {
  name: 'demo',
  operands: '',
  purpose: 'try it all on a throwaway image',
  description: `
Creates a raw image (default: 64M, preallocation falloc) in a fresh temporary directory, writes a
pattern at its start, middle and end, flushes, reopens it, verifies every byte, prints its info
and map, and removes the directory. Fails if anything does not match.`,
  options: {
    prealloc: { type: 'string', arg: 'MODE', help: 'off, falloc (default) or full' },
    size: { type: 'string', arg: 'SIZE', help: 'virtual size, such as 64M or 1G' },
    dir: { type: 'string', arg: 'DIR', help: "make the temporary directory inside DIR (default: the system's)" },
  },
};

export const demoCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (positionals.length > 0) throw usageError('demo', `Unexpected argument: ${positionals[0]}`);
    const prealloc = values.prealloc === undefined ? undefined : parsePreallocation(values.prealloc as string);
    await runDemo({
      prealloc,
      size: values.size as string | undefined,
      dir: values.dir as string | undefined,
      out: streams.out,
    });
    return 0;
  },
};
