/**
 * The text side of qemu-io's commands, as pure functions: flag parsing (getopt with GNU
 * permutation), numbers and patterns with qemu-io's messages, and the report and dump layouts.
 * A bad argument throws CommandError with the one line to print.
 */

import { formatIoSize, INT64_MAX, strtosz } from '../../tools/size.js';
import { formatFixed } from '../../util/printf.js';

/** QEMU's BDRV_REQUEST_MAX_BYTES: the longest single request qemu-io accepts. */
export const MAX_REQUEST_BYTES = 2147483136;

/** A command cannot run as given; the message is the line to print. */
export class CommandError extends Error {}

export interface ParsedFlags {
  flags: Array<[string, string]>;
  rest: string[];
}

/**
 * getopt(3) with GNU argument permutation over argv[1..]: `spec` as getopt's ("P:q" = -P takes
 * a value, -q does not). `usage` is shown with a bad option.
 */
export function getopt(argv: readonly string[], spec: string, usage: string): ParsedFlags {
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
      if (at < 0 || c === ':') throw new CommandError(`${argv[0]}: invalid option -- '${c}' (usage: ${usage})`);
      if (spec[at + 1] !== ':') {
        flags.push([c, '']);
        continue;
      }
      if (j + 1 < arg.length) flags.push([c, arg.slice(j + 1)]);
      else if (i + 1 < argv.length) flags.push([c, argv[++i]!]);
      else throw new CommandError(`${argv[0]}: option requires an argument -- '${c}' (usage: ${usage})`);
      break;
    }
  }
  return { flags, rest };
}

/** qemu-io's cvtnum: an offset or length as a size text, with its two parsing messages. */
export function cvtnum(text: string): number {
  const parsed = strtosz(text);
  if (!parsed.ok && parsed.error === 'invalid') {
    throw new CommandError(`Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ${text}`);
  }
  if (!parsed.ok || parsed.value > INT64_MAX || parsed.value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CommandError(`Parsing error: argument too large -- ${text}`);
  }
  return Number(parsed.value);
}

/** qemu-io's parse_pattern: strtol(text, 0) in 0..255. */
export function parsePattern(text: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|0([0-7]*)|([1-9][0-9]*))$/.exec(text);
  let value = Number.NaN;
  if (m) {
    const magnitude = m[2] ? Number.parseInt(m[2], 16) : m[4] ? Number(m[4]) : Number.parseInt(m[3] || '0', 8);
    value = m[1] === '-' ? -magnitude : magnitude;
  }
  if (!(value >= 0 && value <= 255)) throw new CommandError(`${text} is not a valid pattern byte`);
  return value;
}

export function checkLength(count: number, text: string, suffix = ''): void {
  if (count > MAX_REQUEST_BYTES) {
    throw new CommandError(`length cannot exceed ${MAX_REQUEST_BYTES}${suffix}, given ${text}`);
  }
}

/** qemu-io's timestr: "00.00 sec" under a second, else "h:mm:ss.ss" (always that with -C). */
export function timeText(seconds: number, fixed: boolean): string {
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

/** The hex dump of qemu-io read -v: 16 bytes a line, isalnum characters or '.'. */
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

/**
 * qemu-io's print_report for one request: "wrote 4096/4096 bytes at offset 0" and
 * "4 KiB, 1 ops; 00.00 sec (3.966 MiB/sec and 1015.1882 ops/sec)", or with -C one CSV line.
 */
export function reportText(op: string, seconds: number, offset: number, count: number, csv: boolean): string {
  const t = seconds > 0 ? seconds : 1e-9;
  if (csv) return `${count},1,${timeText(seconds, true)},${formatFixed(count / t, 3)},${formatFixed(1 / t, 3)}\n`;
  return (
    `${op} ${count}/${count} bytes at offset ${offset}\n` +
    `${formatIoSize(count)}, 1 ops; ${timeText(seconds, false)} (${formatIoSize(count / t)}/sec and ${formatFixed(1 / t, 4)} ops/sec)\n`
  );
}

/** Runs `op` and returns how long it took, in seconds. */
export async function timed(op: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await op();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** qemu-io's create_iovec: the lengths of a vectored request; each and their sum fit one request. */
export function vectorLengths(texts: readonly string[]): number[] {
  let total = 0;
  return texts.map((text) => {
    const length = cvtnum(text);
    if (length > MAX_REQUEST_BYTES) {
      throw new CommandError(`Argument '${text}' exceeds maximum size ${MAX_REQUEST_BYTES}`);
    }
    total += length;
    if (total > MAX_REQUEST_BYTES) {
      throw new CommandError(`The total number of bytes exceed the maximum size ${MAX_REQUEST_BYTES}`);
    }
    return length;
  });
}

/** qemu-io's pattern check: the line to print when `buf` is not all `pattern`, else undefined. */
export function patternMismatch(buf: Buffer, pattern: number | undefined, offset: number): string | undefined {
  if (pattern === undefined || buf.equals(Buffer.alloc(buf.length, pattern))) return undefined;
  return `Pattern verification failed at offset ${offset}, ${buf.length} bytes\n`;
}
