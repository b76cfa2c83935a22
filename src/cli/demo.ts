/** `vdisk demo`: the end-to-end walk of demo-walk.ts. */
import { parsePreallocation } from '../block/preallocation.js';
import { type CliCommand, parseCommandLine, usageError } from './args.js';
import { runDemo } from './demo-walk.js';

const HELP = `usage: vdisk demo [--prealloc off|falloc|full] [--size size] [--dir dir]

Creates a raw image (default: 64M, preallocation falloc) in a fresh temporary directory,
writes a pattern at its start, middle and end, flushes, reopens it, verifies every byte,
prints its info and map, and removes the directory. Exits 1 if anything does not match.

  --prealloc MODE   off, falloc or full
  --size SIZE       virtual size, such as 64M or 1G
  --dir DIR         make the temporary directory inside DIR (default: the system's)
`;

export const demoCommand: CliCommand = {
  name: 'demo',
  summary: 'demo [--prealloc off|falloc|full] [--size size] [--dir dir]   try it all on a throwaway image',
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('demo', args, {
      prealloc: { type: 'string' },
      size: { type: 'string' },
      dir: { type: 'string' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
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
