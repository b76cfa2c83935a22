/** `vdisk io`: qemu-io's arguments; the commands themselves are session.ts and commands-*.ts. */
import readline from 'node:readline';
import { type CliCommand, type CommandSpec, parseCommandLine, usageError } from '../args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from '../nbd-options.js';
import { IO_DEFAULT_CACHE, ioOpenRequest } from './open-options.js';
import { IoSession } from './session.js';

const SPEC: CommandSpec = {
  name: 'io',
  operands: '[filename]',
  purpose: 'read and write an image with qemu-io commands',
  description: `
Runs qemu-io style commands on an image and prints what qemu-io prints. Without -c, the commands
are read from standard input, one per line. Without a file name, the first command is usually
'open'.`,
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
      help: `none, writeback, writethrough, directsync, unsafe (default ${IO_DEFAULT_CACHE}, as in qemu-io)`,
    },
    nocache: { type: 'boolean', short: 'n', help: 'short for -t none' },
    discard: {
      type: 'string',
      short: 'd',
      arg: 'discard',
      help: 'unmap or on (the default, as in qemu-io): discards and write -z -u free space;\nignore or off: discards are accepted and free nothing',
    },
    aio: {
      type: 'string',
      short: 'i',
      arg: 'aio',
      help: 'threads (default), native (needs -t none or directsync) or io_uring: accepted as\nqemu-io takes them; vdisk does all file I/O through libuv (see below)',
    },
    'read-only': { type: 'boolean', short: 'r', help: 'open the image read-only' },
    'force-share': {
      type: 'boolean',
      short: 'U',
      help: 'read an image another process holds, without the image lock (only with -r)',
    },
    ...NBD_CLIENT_OPTIONS,
  },
  notes: `
Commands (qemu-io's; 'help' lists them with their flags):
  read [-Cqv] [-P pattern [-s off] [-l len]] off len   read, check a pattern (-P), dump (-v)
  readv [-Cqv] [-P pattern] off len [len..]            the same, several lengths in one request
  write [-Cfnquz] [-P pattern] off len                 write a pattern (default 0xcd); -z zeroes,
                                                       -u with -z may unmap, -f FUA
  writev [-Cfq] [-P pattern] off len [len..]           the same, several lengths in one request
  aio_read, aio_write (as readv, writev; aio_write also -z, -u)   left in flight: each prints its
      report when it completes; aio_flush, close and the end of the session wait for them
  aio_flush      alloc off [count]      discard [-Cq] off len      flush      length      info
  map      truncate [-m off|falloc|full] size      sleep ms      help [command]      quit
  open [-rnU] [-t cache] [-d discard] [-i aio] [-f fmt] [-o driver=fmt] path      close
Offsets and lengths take the suffixes k, M, G, T, P, E.

-i: vdisk's file I/O runs on libuv's thread pool whatever -i says ('threads' is what it does);
libuv uses io_uring for it when Node starts with UV_USE_IO_URING=1 in the environment.`,
  exitStatus: [
    [0, 'every command succeeded (aio requests count once submitted, as in qemu-io)'],
    [1, 'a command failed or the image could not be opened'],
  ],
};

export const ioCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    if (positionals.length > 1) throw usageError('io', 'Expecting at most one image file name');
    const request = ioOpenRequest({
      format: values.format as string | undefined,
      cache: values.cache as string | undefined,
      nocache: Boolean(values.nocache),
      discard: values.discard as string | undefined,
      aio: values.aio as string | undefined,
      readOnly: Boolean(values['read-only']),
      forceShare: Boolean(values['force-share']),
      nbd: nbdClientOptions('io', values),
    });
    const session = new IoSession({ out: streams.out, err: streams.err });
    const filename = positionals[0];
    if (filename !== undefined) await session.openImage(filename, request);
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
    } finally {
      await session.finish();
    }
    return session.failures > 0 ? 1 : 0;
  },
};
