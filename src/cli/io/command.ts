/** `vdisk io`: qemu-io's arguments; the commands themselves are src/tools/io.ts. */
import readline from 'node:readline';
import { cacheMode, parseCacheMode } from '../../block/cache-mode.js';
import { formatDefinition } from '../../engine/formats.js';
import { openImageWithFormat } from '../../engine/open.js';
import { type CliCommand, oneFilename, parseCommandLine } from '../args.js';
import { IoSession } from './session.js';

const HELP = `usage: vdisk io [-f fmt] [-t cache] [-n] [-r] [-U] [-c command]... filename

Runs qemu-io style commands on an image and prints what qemu-io prints. Without -c, the
commands are read from standard input, one per line. Exits 1 if any command failed.

  -c, --cmd CMD     run a command (repeatable), for example -c 'write -P 0xab 0 64k'
  -f, --format FMT  image format; without it the format is probed (raw: block 0 is protected)
  -t, --cache MODE  none, writeback, writethrough (the default, as in qemu-io), directsync, unsafe
  -n, --nocache     short for -t none
  -r, --read-only   open the image read-only
  -U, --force-share do not take the image lock

Commands:
  read [-Cqv] [-P pattern [-s off] [-l len]] off len   read, check a pattern (-P), dump (-v)
  write [-Cfnquz] [-P pattern] off len                 write a pattern (default 0xcd); -z zeroes,
                                                       -u with -z may unmap, -f FUA
  discard [-Cq] off len      flush      length      info      map
  truncate [-m off|falloc|full] size                   help [command]      quit
Offsets and lengths take the suffixes k, M, G, T, P, E.
`;

export const ioCommand: CliCommand = {
  name: 'io',
  summary: "io [-f fmt] [-t cache] [-r] [-c 'command']... filename   read and write an image (qemu-io)",
  help: HELP,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine('io', args, {
      cmd: { type: 'string', short: 'c', multiple: true },
      format: { type: 'string', short: 'f' },
      cache: { type: 'string', short: 't' },
      nocache: { type: 'boolean', short: 'n' },
      'read-only': { type: 'boolean', short: 'r' },
      'force-share': { type: 'boolean', short: 'U' },
    });
    if (values.help) {
      streams.out(HELP);
      return 0;
    }
    // qemu-io's default is writethrough: every write is durable before it is reported.
    const cache = values.nocache
      ? cacheMode('none')
      : parseCacheMode((values.cache as string | undefined) ?? 'writethrough');
    const filename = oneFilename('io', positionals);
    const format = values.format as string | undefined;
    const { backend, format: opened } = await openImageWithFormat(filename, {
      format: format === undefined ? 'probe' : formatDefinition(format).name,
      cache,
      readOnly: Boolean(values['read-only']),
      forceShare: Boolean(values['force-share']),
    });
    const probed = format === undefined;
    if (probed && opened === 'raw') {
      streams.err(
        `vdisk: warning: Image format was not specified for '${filename}' and probing guessed raw; writes that would change how block 0 probes are refused (use -f raw)\n`,
      );
    }
    const session = new IoSession({ backend, format: opened, probed, out: streams.out, err: streams.err });
    try {
      const commands = values.cmd as string[] | undefined;
      if (commands) {
        for (const line of commands) {
          await session.run(line);
          if (session.quit) break;
        }
      } else {
        const input = readline.createInterface({ input: process.stdin, terminal: false });
        const prompt = (): void => {
          if (process.stdin.isTTY) streams.out('vdisk io> ');
        };
        prompt();
        for await (const line of input) {
          await session.run(line);
          if (session.quit) break;
          prompt();
        }
        input.close();
      }
      // QEMU flushes a writable image when it closes it (bdrv_close); so does vdisk io.
      if (!backend.readOnly) await session.run('flush');
    } finally {
      await backend.close();
    }
    return session.failures > 0 ? 1 : 0;
  },
};
