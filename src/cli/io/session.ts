/**
 * `io`: an analogue of qemu-io over a BlockBackend. An IoSession runs command lines such as
 * "write -P 0xab 0 64k" and prints what qemu-io 7.2 prints for them, line for line: the same
 * reports, hex dumps, pattern checks and usage errors. Where qemu-io only says "Input/output
 * error", vdisk prints its own reason ("read failed: Request past the end of the image: …").
 *
 * One difference on purpose: every diagnostic of a failed command is one line on the err
 * stream (qemu-io prints some of them, and usage texts, on stdout), so that stdout carries only
 * results: reports, dumps, "Pattern verification failed …", info, map and length.
 */
import type { BlockBackend, ImageDescription } from '../../block/backend.js';
import { VdiskError } from '../../block/errors.js';
import { parsePreallocation } from '../../block/preallocation.js';
import { formatIoSize } from '../../tools/size.js';
import { dumpQobject } from '../render/qemu-json.js';
import { CommandError, checkLength, cvtnum, getopt, hexDump, parsePattern, reportText, timed } from './text.js';

export { CommandError, hexDump, MAX_REQUEST_BYTES } from './text.js';

export interface IoSessionOptions {
  backend: BlockBackend;
  /** The image format, for `info`. */
  format: string;
  /** The format was probed, not given: writes may not make a raw image look like another format. */
  probed?: boolean;
  /** Command output (qemu-io's stdout). Default: process.stdout. */
  out?: (text: string) => void;
  /** Diagnostics (qemu-io's stderr). Default: process.stderr. */
  err?: (text: string) => void;
}

interface CommandInfo {
  name: string;
  alias?: string;
  args: string;
  oneline: string;
  argmin: number;
  /** -1: no upper limit. */
  argmax: number;
  writes?: boolean;
  run(session: IoSession, argv: string[]): Promise<boolean>;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const readCommand: CommandInfo = {
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
    let ok = true;
    if (pattern !== undefined) {
      const region = buf.subarray(patternOffset, patternOffset + checkCount);
      if (!region.equals(Buffer.alloc(checkCount, pattern))) {
        session.out(`Pattern verification failed at offset ${offset + patternOffset}, ${checkCount} bytes\n`);
        ok = false;
      }
    }
    if (quiet) return ok;
    if (verbose) session.out(hexDump(buf, offset));
    session.out(reportText('read', seconds, offset, count, csv));
    return ok;
  },
};

const writeCommand: CommandInfo = {
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
        seconds = await timed(() => backend.writeZeroes(offset, count, { fua, mayUnmap, noFallback }));
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

const discardCommand: CommandInfo = {
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
      seconds = await timed(() => session.backend.discard(offset, count));
    } catch (err) {
      throw new CommandError(`discard failed: ${errorText(err)}`);
    }
    if (!quiet) session.out(reportText('discard', seconds, offset, count, csv));
    return true;
  },
};

const flushCommand: CommandInfo = {
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

const truncateCommand: CommandInfo = {
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

const lengthCommand: CommandInfo = {
  name: 'length',
  alias: 'l',
  args: '',
  oneline: 'gets the length of the current file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    session.out(`${formatIoSize(session.backend.length)}\n`);
    return true;
  },
};

/** The vm state offset QEMU reports for qcow2: the guest size rounded up to what one L2 table maps. */
function vmStateOffset(d: ImageDescription): number {
  if (d.clusterSize === undefined) return 0;
  const extended = d.formatSpecific?.data['extended-l2'] === true;
  const span = (d.clusterSize * d.clusterSize) / (extended ? 16 : 8);
  return Math.ceil(d.virtualSize / span) * span;
}

const infoCommand: CommandInfo = {
  name: 'info',
  alias: 'i',
  args: '',
  oneline: 'prints information about the current file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    const d = session.backend.describe();
    session.out(`format name: ${session.format}\n`);
    session.out(`cluster size: ${formatIoSize(d.clusterSize ?? 0)}\n`);
    session.out(`vm state offset: ${formatIoSize(vmStateOffset(d))}\n`);
    if (d.formatSpecific) session.out(`Format specific information:\n${dumpQobject(d.formatSpecific.data, 1)}`);
    return true;
  },
};

const mapCommand: CommandInfo = {
  name: 'map',
  args: '',
  oneline: 'prints the allocated areas of a file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    const backend = session.backend;
    let offset = 0;
    let remaining = backend.length;
    try {
      while (remaining > 0) {
        // Runs of equal allocation at this layer, as qemu-io's map_is_allocated merges them.
        let first: boolean | undefined;
        let run = 0;
        while (run < remaining) {
          const extent = await backend.blockStatus(offset + run, remaining - run);
          const allocated = extent.allocated && (extent.depth ?? 0) === 0;
          if (first === undefined) first = allocated;
          else if (allocated !== first) break;
          if (extent.length <= 0) throw new VdiskError('EIO', 'Unexpected end of image');
          run += extent.length;
        }
        const state = first ? '    allocated' : 'not allocated';
        session.out(
          `${formatIoSize(run)} (0x${run.toString(16)}) bytes ${state} at offset ${formatIoSize(offset)} (0x${offset.toString(16)})\n`,
        );
        offset += run;
        remaining -= run;
      }
      return true;
    } catch (err) {
      throw new CommandError(`vdisk: Failed to get allocation status: ${errorText(err)}`);
    }
  },
};

const helpCommand: CommandInfo = {
  name: 'help',
  alias: '?',
  args: '[command]',
  oneline: 'help for one or all commands',
  argmin: 0,
  argmax: 1,
  async run(session, argv) {
    if (argv.length > 1) {
      const command = findCommand(argv[1]!);
      if (!command) {
        throw new CommandError(`command ${argv[1]} not found`);
      }
      session.out(oneline(command));
      return true;
    }
    const sorted = [...COMMANDS].sort((a, b) => (a.name < b.name ? -1 : 1));
    session.out(sorted.map(oneline).join(''));
    session.out("\nUse 'help commandname' for extended help.\n");
    return true;
  },
};

const quitCommand: CommandInfo = {
  name: 'quit',
  alias: 'q',
  args: '',
  oneline: 'exit the program',
  argmin: 0,
  argmax: 0,
  async run(session) {
    session.quit = true;
    return true;
  },
};

const COMMANDS: readonly CommandInfo[] = [
  readCommand,
  writeCommand,
  discardCommand,
  flushCommand,
  truncateCommand,
  lengthCommand,
  infoCommand,
  mapCommand,
  helpCommand,
  quitCommand,
];

function oneline(command: CommandInfo): string {
  return `${command.name} ${command.args ? `${command.args} ` : command.name === 'map' ? ' ' : ''}-- ${command.oneline}\n`;
}

function usageOf(command: CommandInfo): string {
  return `${command.name} ${command.args}`.trimEnd();
}

function findCommand(name: string): CommandInfo | undefined {
  return COMMANDS.find((c) => c.name === name || c.alias === name);
}

/** The names of the commands an IoSession knows. */
export function ioCommandNames(): string[] {
  return COMMANDS.map((c) => c.name);
}

export class IoSession {
  readonly backend: BlockBackend;
  readonly format: string;
  readonly probed: boolean;
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  /** Set by `quit`. */
  quit = false;
  /** Commands that failed so far. */
  failures = 0;

  constructor(options: IoSessionOptions) {
    this.backend = options.backend;
    this.format = options.format;
    this.probed = Boolean(options.probed);
    this.out = options.out ?? ((text) => process.stdout.write(text));
    this.err = options.err ?? ((text) => process.stderr.write(text));
  }

  /** Runs one command line; resolves true when the command succeeded. */
  async run(line: string): Promise<boolean> {
    const argv = line.split(' ').filter((word) => word.length > 0);
    if (argv.length === 0) return true;
    const ok = await this.#dispatch(argv);
    if (!ok) this.failures++;
    return ok;
  }

  /** Reports a wrong number of operands with the command's usage, and fails. */
  usage(command: CommandInfo): false {
    this.err(`${command.name}: wrong arguments (usage: ${usageOf(command)})\n`);
    return false;
  }

  async #dispatch(argv: string[]): Promise<boolean> {
    const name = argv[0]!;
    const command = findCommand(name);
    if (!command) {
      this.err(`command "${name}" not found\n`);
      return false;
    }
    const count = argv.length - 1;
    if (count < command.argmin || (command.argmax !== -1 && count > command.argmax)) {
      const expected =
        command.argmax === -1
          ? `at least ${command.argmin} arguments`
          : command.argmin === command.argmax
            ? `${command.argmin} arguments`
            : `between ${command.argmin} and ${command.argmax} arguments`;
      this.err(`bad argument count ${count} to ${name}, expected ${expected}\n`);
      return false;
    }
    if (command.writes && this.backend.readOnly) {
      this.err('vdisk: The image is opened read-only\n');
      return false;
    }
    try {
      return await command.run(this, argv);
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      this.err(`${err.message}\n`);
      return false;
    }
  }
}
