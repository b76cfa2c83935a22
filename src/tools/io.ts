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
import type { BlockBackend } from '../block/backend.js';
import type { BlockDriver } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import { parsePreallocation } from '../block/preallocation.js';
import { probeFormat } from '../format/registry.js';
import { formatFixed } from './printf.js';
import { dumpQobject } from './qemu-json.js';
import { formatIoSize, INT64_MAX, strtosz } from './size.js';

/** QEMU's BDRV_REQUEST_MAX_BYTES: the longest single request qemu-io accepts. */
export const MAX_REQUEST_BYTES = 2147483136;

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

/** A command failed; its message was printed already. */
class Failed extends Error {}

/** getopt(3) with GNU argument permutation, as qemu-io's commands parse their flags. */
function getopt(
  session: IoSession,
  command: CommandInfo,
  argv: string[],
  spec: string,
): { flags: Array<[string, string]>; rest: string[] } {
  const flags: Array<[string, string]> = [];
  const rest: string[] = [];
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      rest.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      rest.push(arg);
      continue;
    }
    for (let j = 1; j < arg.length; j++) {
      const c = arg[j]!;
      const at = spec.indexOf(c);
      if (at < 0 || c === ':') {
        session.err(`${argv[0]}: invalid option -- '${c}' (usage: ${command.name} ${command.args})\n`);
        throw new Failed();
      }
      if (spec[at + 1] !== ':') {
        flags.push([c, '']);
        continue;
      }
      if (j + 1 < arg.length) flags.push([c, arg.slice(j + 1)]);
      else if (i + 1 < argv.length) flags.push([c, argv[++i]!]);
      else {
        session.err(`${argv[0]}: option requires an argument -- '${c}' (usage: ${command.name} ${command.args})\n`);
        throw new Failed();
      }
      break;
    }
  }
  return { flags, rest };
}

/** qemu-io's cvtnum: a size text, with its two parsing messages. */
function cvtnum(session: IoSession, text: string): number {
  const parsed = strtosz(text);
  if (!parsed.ok && parsed.error === 'invalid') {
    session.err(`Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ${text}\n`);
    throw new Failed();
  }
  if (!parsed.ok || parsed.value > INT64_MAX || parsed.value > BigInt(Number.MAX_SAFE_INTEGER)) {
    session.err(`Parsing error: argument too large -- ${text}\n`);
    throw new Failed();
  }
  return Number(parsed.value);
}

/** qemu-io's parse_pattern: strtol(arg, 0) in 0..255. */
function parsePattern(session: IoSession, text: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|0([0-7]*)|([1-9][0-9]*))$/.exec(text);
  let value = Number.NaN;
  if (m) {
    const magnitude = m[2] ? Number.parseInt(m[2], 16) : m[4] ? Number(m[4]) : Number.parseInt(m[3] || '0', 8);
    value = m[1] === '-' ? -magnitude : magnitude;
  }
  if (!(value >= 0 && value <= 255)) {
    session.err(`${text} is not a valid pattern byte\n`);
    throw new Failed();
  }
  return value;
}

function checkLength(session: IoSession, count: number, text: string, suffix = ''): void {
  if (count > MAX_REQUEST_BYTES) {
    session.err(`length cannot exceed ${MAX_REQUEST_BYTES}${suffix}, given ${text}\n`);
    throw new Failed();
  }
}

/** qemu-io's timestr: "00.00 sec" under a second, else "h:mm:ss.ss" (always that with -C). */
function timeText(seconds: number, fixed: boolean): string {
  const whole = Math.floor(seconds);
  const frac = seconds - whole;
  if (fixed || whole > 0) {
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    const s = (whole % 60) + frac;
    return `${h}:${String(m).padStart(2, '0')}:${formatFixed(s, 2).padStart(5, '0')}`;
  }
  return `${formatFixed(frac, 2).padStart(5, '0')} sec`;
}

/** The isalnum-or-dot hex dump of qemu-io read -v. */
export function hexDump(buf: Buffer, offset: number): string {
  let text = '';
  for (let i = 0; i < buf.length; i += 16) {
    const line = buf.subarray(i, Math.min(i + 16, buf.length));
    const hex = [...line].map((b) => `${b.toString(16).padStart(2, '0')} `).join('');
    const chars = [...line].map((b) => (/[A-Za-z0-9]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : '.'));
    text += `${(offset + i).toString(16).padStart(8, '0')}:  ${hex} ${chars.join('')}\n`;
  }
  return text;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** qemu-io's print_report: "wrote 4096/4096 bytes at offset 0" and the speed line, or -C's CSV. */
function report(
  session: IoSession,
  op: string,
  seconds: number,
  offset: number,
  count: number,
  total: number,
  csv: boolean,
): void {
  const t = seconds > 0 ? seconds : 1e-9;
  if (csv) {
    session.out(`${total},1,${timeText(seconds, true)},${formatFixed(count / t, 3)},${formatFixed(1 / t, 3)}\n`);
    return;
  }
  session.out(`${op} ${total}/${count} bytes at offset ${offset}\n`);
  session.out(
    `${formatIoSize(total)}, 1 ops; ${timeText(seconds, false)} (${formatIoSize(total / t)}/sec and ${formatFixed(1 / t, 4)} ops/sec)\n`,
  );
}

async function timed(op: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await op();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const readCommand: CommandInfo = {
  name: 'read',
  alias: 'r',
  args: '[-Cqv] [-P pattern [-s off] [-l len]] off len',
  oneline: 'reads a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  async run(session, argv) {
    const { flags, rest } = getopt(session, this, argv, 'Cl:pP:qs:v');
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
      else if (c === 'P') pattern = parsePattern(session, arg);
      else if (c === 's') {
        sflag = true;
        patternOffset = cvtnum(session, arg);
      } else if (c === 'l') patternCount = cvtnum(session, arg);
    }
    if (rest.length !== 2) return session.usage(this);
    const offset = cvtnum(session, rest[0]!);
    const count = cvtnum(session, rest[1]!);
    checkLength(session, count, rest[1]!);
    if (pattern === undefined && (patternCount !== undefined || sflag)) return session.usage(this);
    const checkCount = patternCount ?? count - patternOffset;
    if (checkCount < 0 || checkCount + patternOffset > count) {
      session.err('pattern verification range exceeds end of read data\n');
      return false;
    }
    const buf = Buffer.alloc(count, 0xab);
    let seconds: number;
    try {
      seconds = await timed(() => session.backend.readInto(offset, buf));
    } catch (err) {
      session.err(`read failed: ${errorText(err)}\n`);
      return false;
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
    report(session, 'read', seconds, offset, count, count, csv);
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
    const { flags, rest } = getopt(session, this, argv, 'CfnpP:quz');
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
      else if (c === 'P') pattern = parsePattern(session, arg);
    }
    if (rest.length !== 2) return session.usage(this);
    if (noFallback && !zero) {
      session.err('-n requires -z to be specified\n');
      return false;
    }
    if (mayUnmap && !zero) {
      session.err('-u requires -z to be specified\n');
      return false;
    }
    if (zero && pattern !== undefined) {
      session.err('Only one of -z, -P, and -s can be specified at the same time\n');
      return false;
    }
    const offset = cvtnum(session, rest[0]!);
    const count = cvtnum(session, rest[1]!);
    if (!noFallback) checkLength(session, count, rest[1]!, ' without -n');
    const backend = session.backend;
    let seconds: number;
    try {
      if (zero) {
        seconds = await timed(() => backend.writeZeroes(offset, count, { fua, mayUnmap, noFallback }));
      } else {
        const buf = Buffer.alloc(count, pattern ?? 0xcd);
        await session.checkProbedWrite(offset, buf);
        seconds = await timed(() => backend.write(offset, buf, { fua }));
      }
    } catch (err) {
      session.err(`write failed: ${errorText(err)}\n`);
      return false;
    }
    if (!quiet) report(session, 'wrote', seconds, offset, count, count, csv);
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
    const { flags, rest } = getopt(session, this, argv, 'Cq');
    const csv = flags.some(([c]) => c === 'C');
    const quiet = flags.some(([c]) => c === 'q');
    if (rest.length !== 2) return session.usage(this);
    const offset = cvtnum(session, rest[0]!);
    const count = cvtnum(session, rest[1]!);
    checkLength(session, count, rest[1]!);
    let seconds: number;
    try {
      seconds = await timed(() => session.backend.discard(offset, count));
    } catch (err) {
      session.err(`discard failed: ${errorText(err)}\n`);
      return false;
    }
    if (!quiet) report(session, 'discard', seconds, offset, count, count, csv);
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
      session.err(`flush failed: ${errorText(err)}\n`);
      return false;
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
    const { flags, rest } = getopt(session, this, argv, 'm:');
    let mode = 'off';
    for (const [, arg] of flags) mode = arg;
    let prealloc: ReturnType<typeof parsePreallocation>;
    try {
      prealloc = parsePreallocation(mode);
    } catch {
      session.err(`vdisk: Invalid preallocation mode '${mode}'\n`);
      return false;
    }
    if (rest.length < 1) return session.usage(this);
    const length = cvtnum(session, rest[0]!);
    try {
      await session.backend.truncate(length, prealloc);
      return true;
    } catch (err) {
      session.err(`vdisk: ${errorText(err)}\n`);
      return false;
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
function vmStateOffset(root: BlockDriver, size: number, clusterSize: number): number {
  const own = (root as { vmStateOffset?: unknown }).vmStateOffset;
  if (typeof own === 'number') return own;
  if (clusterSize === 0) return 0;
  const extended = root.formatSpecific?.()?.['extended-l2'] === true;
  const span = (clusterSize * clusterSize) / (extended ? 16 : 8);
  return Math.ceil(size / span) * span;
}

const infoCommand: CommandInfo = {
  name: 'info',
  alias: 'i',
  args: '',
  oneline: 'prints information about the current file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    const root = session.backend.root;
    const clusterSize = (root as { clusterSize?: unknown }).clusterSize;
    const cluster = typeof clusterSize === 'number' ? clusterSize : 0;
    session.out(`format name: ${session.format}\n`);
    session.out(`cluster size: ${formatIoSize(cluster)}\n`);
    session.out(`vm state offset: ${formatIoSize(vmStateOffset(root, session.backend.length, cluster))}\n`);
    const specific = root.formatSpecific?.();
    if (specific) {
      const data = typeof specific.type === 'string' && specific.data ? specific.data : specific;
      session.out(`Format specific information:\n${dumpQobject(data, 1)}`);
    }
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
      session.err(`vdisk: Failed to get allocation status: ${errorText(err)}\n`);
      return false;
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
        session.err(`command ${argv[1]} not found\n`);
        return false;
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
    this.err(`${command.name}: wrong arguments (usage: ${command.name} ${command.args})\n`);
    return false;
  }

  /**
   * QEMU's protection for probed raw images: a write may not change the first sector so that
   * the image would be probed as another format next time.
   */
  async checkProbedWrite(offset: number, buf: Buffer): Promise<void> {
    if (!this.probed || this.format !== 'raw' || offset >= 512) return;
    const head = await this.backend.read(0, Math.min(512, this.backend.length));
    buf.copy(head, offset, 0, Math.min(buf.length, head.length - offset));
    if (probeFormat(head) !== 'raw') {
      throw new VdiskError(
        'EACCES',
        'this write would make the probed raw image look like another format; give the format with -f raw',
      );
    }
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
      if (err instanceof Failed) return false;
      throw err;
    }
  }
}
