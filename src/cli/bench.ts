/** `vdisk bench`: qemu-img bench's options, its two summary lines and its messages. */
import { type CacheModeName, cacheMode, parseCacheModeName } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { benchHeader, benchImage } from '../tools/bench.js';
import { INT64_MAX } from '../tools/size.js';
import { formatFixed } from '../util/printf.js';
import { type CliCommand, type CommandSpec, oneFilename, parseCommandLine } from './args.js';
import { parseAio } from './io/open-options.js';
import { INT_MAX, sizeArgument } from './numbers.js';

const SPEC: CommandSpec = {
  name: 'bench',
  operands: 'filename',
  purpose: 'time a run of reads or writes (qemu-img bench)',
  description: `
Sends COUNT read requests (or writes, with -w) of BUFFER_SIZE bytes to an image, DEPTH of them
in flight, starting at OFFSET and moving on by STEP_SIZE (wrapping at the end of the image), and
prints how long the run took, as qemu-img bench does. The numbers are vdisk's own.`,
  options: {
    count: { type: 'string', short: 'c', arg: 'count', help: 'requests in all (default 75000)' },
    depth: { type: 'string', short: 'd', arg: 'depth', help: 'requests in flight at once (default 64)' },
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    'flush-interval': {
      type: 'string',
      arg: 'N',
      help: 'with -w, flush after every N requests (at least DEPTH); default never',
    },
    aio: {
      type: 'string',
      short: 'i',
      arg: 'aio',
      help: 'threads, native or io_uring, as qemu-img takes them (vdisk does its file I/O\nthrough libuv whatever the mode; see vdisk io --help)',
    },
    native: { type: 'boolean', short: 'n', help: 'native AIO, as qemu-img -n (needs -t none or directsync)' },
    'no-drain': { type: 'boolean', help: 'flush beside the requests in flight instead of draining them first' },
    offset: { type: 'string', short: 'o', arg: 'offset', help: 'where the first request starts (default 0)' },
    pattern: { type: 'string', arg: 'pattern', help: 'the byte writes are made of (default 0)' },
    quiet: {
      type: 'boolean',
      short: 'q',
      help: 'accepted, as qemu-img bench does; the summary is printed all the same',
    },
    'buffer-size': { type: 'string', short: 's', arg: 'buffer_size', help: 'bytes per request (default 4k)' },
    'step-size': {
      type: 'string',
      short: 'S',
      arg: 'step_size',
      help: 'bytes from one request to the next (default: the buffer size)',
    },
    cache: {
      type: 'string',
      short: 't',
      arg: 'cache',
      help: 'none, writeback (default), writethrough, directsync, unsafe',
    },
    write: { type: 'boolean', short: 'w', help: 'write instead of read (opens the image read-write)' },
    'force-share': {
      type: 'boolean',
      short: 'U',
      help: 'read an image another process holds, without the image lock (not with -w)',
    },
  },
};

function count(value: unknown, what: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  const n = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= min && n <= INT_MAX)) throw new VdiskError('EINVAL', `Invalid ${what} specified`);
  return n;
}

function size(value: unknown, what: string, max: bigint): number | undefined {
  return value === undefined ? undefined : Number(sizeArgument(what, String(value), 0n, max));
}

/** strtoul(text, 0) in 0..255, as qemu-img reads --pattern. */
function patternByte(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  const n = /^0[xX][0-9a-fA-F]+$/.test(text)
    ? Number.parseInt(text.slice(2), 16)
    : /^0[0-7]*$/.test(text)
      ? Number.parseInt(text, 8)
      : /^[1-9][0-9]*$/.test(text)
        ? Number(text)
        : Number.NaN;
  if (!(n >= 0 && n <= 255)) throw new VdiskError('EINVAL', 'Invalid pattern byte specified');
  return n;
}

function cacheOption(value: unknown): CacheModeName {
  try {
    return parseCacheModeName((value as string | undefined) ?? 'writeback');
  } catch {
    throw new VdiskError('EINVAL', 'Invalid cache mode');
  }
}

export const benchCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const options = {
      count: count(values.count, 'request count', 0),
      depth: count(values.depth, 'queue depth', 1),
      flushInterval: count(values['flush-interval'], 'flush interval', 0),
      offset: size(values.offset, 'offset', INT64_MAX),
      pattern: patternByte(values.pattern),
      bufferSize: size(values['buffer-size'], 'buffer size', BigInt(INT_MAX)),
      stepSize: size(values['step-size'], 'step_size', BigInt(INT_MAX)),
      cache: cacheOption(values.cache),
      write: Boolean(values.write),
      drainOnFlush: !values['no-drain'],
      forceShare: Boolean(values['force-share']),
    };
    const filename = oneFilename('bench', positionals);
    // -n is qemu-img's native AIO, which needs O_DIRECT; vdisk checks the same and does libuv I/O.
    parseAio(values.native ? 'native' : ((values.aio as string | undefined) ?? 'threads'), cacheMode(options.cache));
    const result = await benchImage(
      {
        ...options,
        filename,
        format: values.format === undefined ? 'probe' : formatDefinition(values.format as string).name,
      },
      (plan) => streams.out(benchHeader(plan)),
    );
    streams.out(`Run completed in ${formatFixed(result.seconds, 3)} seconds.\n`);
    return 0;
  },
};
