/** `vdisk io`: qemu-io's arguments; the commands themselves are session.ts. */
import readline from 'node:readline';
import { cacheMode, parseCacheMode } from '../../block/cache-mode.js';
import { formatDefinition } from '../../engine/formats.js';
import { openImageWithFormat } from '../../engine/open.js';
import { type CliCommand, type CommandSpec, oneFilename, parseCommandLine } from '../args.js';
import { commandHelp } from '../help.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from '../nbd-options.js';
import { IoSession } from './session.js';

const SPEC: CommandSpec = {
  name: 'io',
  operands: 'filename',
  purpose: 'read and write an image with qemu-io commands',
  description: `
Runs qemu-io style commands on an image and prints what qemu-io prints. Without -c, the commands
are read from standard input, one per line.`,
  options: {
    cmd: {
      type: 'string',
      short: 'c',
      arg: 'command',
      multiple: true,
      help: "run a command (repeatable), for example -c 'write -P 0xab 0 64k'",
    },
    format: {
      type: 'string',
      short: 'f',
      arg: 'fmt',
      help: "image format; without it the format is probed (a probed raw image's block 0 is protected)",
    },
    cache: {
      type: 'string',
      short: 't',
      arg: 'cache',
      help: 'none, writeback, writethrough (the default, as in qemu-io), directsync, unsafe',
    },
    nocache: { type: 'boolean', short: 'n', help: 'short for -t none' },
    'read-only': { type: 'boolean', short: 'r', help: 'open the image read-only' },
    'force-share': {
      type: 'boolean',
      short: 'U',
      help: 'read an image another process holds, without the image lock (only with -r)',
    },
    ...NBD_CLIENT_OPTIONS,
  },
  notes: `
Commands:
  read [-Cqv] [-P pattern [-s off] [-l len]] off len   read, check a pattern (-P), dump (-v)
  write [-Cfnquz] [-P pattern] off len                 write a pattern (default 0xcd); -z zeroes,
                                                       -u with -z may unmap, -f FUA
  discard [-Cq] off len      flush      length      info      map
  truncate [-m off|falloc|full] size                   help [command]      quit
Offsets and lengths take the suffixes k, M, G, T, P, E.`,
  exitStatus: '0 every command succeeded, 1 a command failed or the image could not be opened',
};

export const ioCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (values.help) {
      streams.out(commandHelp(SPEC));
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
      nbd: nbdClientOptions('io', values),
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
