/** qemu-io's commands that read, write, discard, flush and truncate at one offset. */
import { parsePreallocation } from '../../block/preallocation.js';
import { type CommandInfo, errorText, usageOf } from './command-info.js';
import {
  CommandError,
  checkLength,
  cvtnum,
  getopt,
  hexDump,
  parsePattern,
  patternMismatch,
  reportText,
  timed,
} from './text.js';

export const readCommand: CommandInfo = {
  name: 'read',
  alias: 'r',
  args: '[-Cqv] [-P pattern [-s off] [-l len]] off len',
  oneline: 'reads a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  async run(session, argv) {
    const { flags, rest } = getopt(argv, 'Cl:pP:qs:v', usageOf(this));
    let csv = false;
    let quiet = false;
    let verbose = false;
    let pattern: number | undefined;
    let patternOffset = 0;
    let patternCount: number | undefined;
    let sflag = false;
    for (const [c, arg] of flags) {
      if (c === 'C') csv = true;
      else if (c === 'q') quiet = true;
      else if (c === 'v') verbose = true;
      else if (c === 'P') pattern = parsePattern(arg);
      else if (c === 's') {
        sflag = true;
        patternOffset = cvtnum(arg);
      } else if (c === 'l') patternCount = cvtnum(arg);
    }
    if (rest.length !== 2) return session.usage(this);
    const offset = cvtnum(rest[0]!);
    const count = cvtnum(rest[1]!);
    checkLength(count, rest[1]!);
    if (pattern === undefined && (patternCount !== undefined || sflag)) return session.usage(this);
    const checkCount = patternCount ?? count - patternOffset;
    if (checkCount < 0 || checkCount + patternOffset > count) {
      throw new CommandError('pattern verification range exceeds end of read data');
    }
    const buf = Buffer.alloc(count, 0xab);
    let seconds: number;
    try {
      seconds = await timed(() => session.backend.readInto(offset, buf));
    } catch (err) {
      throw new CommandError(`read failed: ${errorText(err)}`);
    }
    const mismatch = patternMismatch(
      buf.subarray(patternOffset, patternOffset + checkCount),
      pattern,
      offset + patternOffset,
    );
    if (mismatch) session.out(mismatch);
    const ok = mismatch === undefined;
    if (quiet) return ok;
    if (verbose) session.out(hexDump(buf, offset));
    session.out(reportText('read', seconds, offset, count, csv));
    return ok;
  },
};

export const writeCommand: CommandInfo = {
  name: 'write',
  alias: 'w',
  args: '[-Cfnquz] [-P pattern] off len',
  oneline: 'writes a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  writes: true,
  async run(session, argv) {
    const { flags, rest } = getopt(argv, 'CfnpP:quz', usageOf(this));
    let csv = false;
    let quiet = false;
    let fua = false;
    let noFallback = false;
    let mayUnmap = false;
    let zero = false;
    let pattern: number | undefined;
    for (const [c, arg] of flags) {
      if (c === 'C') csv = true;
      else if (c === 'q') quiet = true;
      else if (c === 'f') fua = true;
      else if (c === 'n') noFallback = true;
      else if (c === 'u') mayUnmap = true;
      else if (c === 'z') zero = true;
      else if (c === 'P') pattern = parsePattern(arg);
    }
    if (rest.length !== 2) return session.usage(this);
    if (noFallback && !zero) {
      throw new CommandError('-n requires -z to be specified');
    }
    if (mayUnmap && !zero) {
      throw new CommandError('-u requires -z to be specified');
    }
    if (zero && pattern !== undefined) {
      throw new CommandError('Only one of -z, -P, and -s can be specified at the same time');
    }
    const offset = cvtnum(rest[0]!);
    const count = cvtnum(rest[1]!);
    if (!noFallback) checkLength(count, rest[1]!, ' without -n');
    const backend = session.backend;
    let seconds: number;
    try {
      if (zero) {
        // Without -d unmap, qemu drops the may-unmap flag: the zeros stay allocated.
        const flags = { fua, mayUnmap: mayUnmap && session.unmap, noFallback };
        seconds = await timed(() => backend.writeZeroes(offset, count, flags));
      } else {
        const buf = Buffer.alloc(count, pattern ?? 0xcd);
        seconds = await timed(() => backend.write(offset, buf, { fua }));
      }
    } catch (err) {
      throw new CommandError(`write failed: ${errorText(err)}`);
    }
    if (!quiet) session.out(reportText('wrote', seconds, offset, count, csv));
    return true;
  },
};

export const discardCommand: CommandInfo = {
  name: 'discard',
  alias: 'd',
  args: '[-Cq] off len',
  oneline: 'discards a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  writes: true,
  async run(session, argv) {
    const { flags, rest } = getopt(argv, 'Cq', usageOf(this));
    const csv = flags.some(([c]) => c === 'C');
    const quiet = flags.some(([c]) => c === 'q');
    if (rest.length !== 2) return session.usage(this);
    const offset = cvtnum(rest[0]!);
    const count = cvtnum(rest[1]!);
    checkLength(count, rest[1]!);
    let seconds: number;
    try {
      // With -d ignore, qemu accepts a discard and frees nothing.
      seconds = await timed(() => (session.unmap ? session.backend.discard(offset, count) : Promise.resolve()));
    } catch (err) {
      throw new CommandError(`discard failed: ${errorText(err)}`);
    }
    if (!quiet) session.out(reportText('discard', seconds, offset, count, csv));
    return true;
  },
};

export const flushCommand: CommandInfo = {
  name: 'flush',
  alias: 'f',
  args: '',
  oneline: 'flush all in-core file state to disk',
  argmin: 0,
  argmax: 0,
  async run(session) {
    try {
      await session.backend.flush();
      return true;
    } catch (err) {
      throw new CommandError(`flush failed: ${errorText(err)}`);
    }
  },
};

export const truncateCommand: CommandInfo = {
  name: 'truncate',
  alias: 't',
  args: '[-m prealloc_mode] off',
  oneline: 'truncates the current file at the given offset',
  argmin: 1,
  argmax: 3,
  writes: true,
  async run(session, argv) {
    const { flags, rest } = getopt(argv, 'm:', usageOf(this));
    let mode = 'off';
    for (const [, arg] of flags) mode = arg;
    let prealloc: ReturnType<typeof parsePreallocation>;
    try {
      prealloc = parsePreallocation(mode);
    } catch {
      throw new CommandError(`vdisk: Invalid preallocation mode '${mode}'`);
    }
    if (rest.length < 1) return session.usage(this);
    const length = cvtnum(rest[0]!);
    try {
      await session.backend.truncate(length, prealloc);
      return true;
    } catch (err) {
      throw new CommandError(`vdisk: ${errorText(err)}`);
    }
  },
};
