/**
 * Sizes as QEMU's tools read and print them.
 *
 * Parsing follows qemu_strtosz (util/cutils.c) exactly: a decimal integer, or "0x…" hex without
 * fraction or suffix, or a decimal with a fraction that needs a suffix ("1.5G"; "1.5" alone is
 * refused); one optional suffix b/B (bytes) k/K M G T P E (powers of 1024); leading white space
 * allowed, nothing after the suffix; no minus sign anywhere.
 */
import { VdiskError } from '../block/errors.js';
import { formatFixed, formatGeneral } from '../util/printf.js';

export const INT64_MAX = 9223372036854775807n;
const UINT64_LIMIT = 1n << 64n;

export type SizeParse = { ok: true; value: bigint } | { ok: false; error: 'invalid' | 'range' };

const SPACE = new Set([' ', '\t', '\n', '\v', '\f', '\r']);

function digitValue(c: string | undefined, base: number): number {
  if (c === undefined) return -1;
  const v = Number.parseInt(c, 36);
  return Number.isNaN(v) || v >= base ? -1 : v;
}

/** glibc strtoull: white space, a sign, an optional 0x for base 16, digits. */
function strtoull(
  text: string,
  base: 10 | 16,
): { value: bigint; end: number; overflow: boolean; digits: boolean; negative: boolean } {
  let i = 0;
  while (i < text.length && SPACE.has(text[i]!)) i++;
  let negative = false;
  if (text[i] === '+' || text[i] === '-') {
    negative = text[i] === '-';
    i++;
  }
  if (
    base === 16 &&
    text[i] === '0' &&
    (text[i + 1] === 'x' || text[i + 1] === 'X') &&
    digitValue(text[i + 2], 16) >= 0
  ) {
    i += 2;
  }
  const start = i;
  let value = 0n;
  while (digitValue(text[i], base) >= 0) {
    value = value * BigInt(base) + BigInt(digitValue(text[i], base));
    i++;
  }
  if (i === start) return { value: 0n, end: 0, overflow: false, digits: false, negative };
  return { value, end: i, overflow: value >= UINT64_LIMIT, digits: true, negative };
}

function suffixMultiplier(c: string | undefined): bigint {
  switch (c?.toUpperCase()) {
    case 'B':
      return 1n;
    case 'K':
      return 1n << 10n;
    case 'M':
      return 1n << 20n;
    case 'G':
      return 1n << 30n;
    case 'T':
      return 1n << 40n;
    case 'P':
      return 1n << 50n;
    case 'E':
      return 1n << 60n;
    default:
      return 0n;
  }
}

/** qemu_strtosz: the exact value of a size text, or why it is not one. */
export function strtosz(text: string): SizeParse {
  const invalid: SizeParse = { ok: false, error: 'invalid' };
  // At "out:" QEMU turns any error into EINVAL when characters are left over.
  const fail = (end: number, error: 'invalid' | 'range'): SizeParse =>
    end < text.length ? invalid : { ok: false, error };

  let parsed = strtoull(text, 10);
  if (!parsed.digits) return invalid;
  if (parsed.overflow) return fail(parsed.end, 'range');
  if (text.slice(0, parsed.end).includes('-')) return invalid;
  let value = parsed.value;
  let end = parsed.end;
  let fraction = 0n; // 64.64 fixed point

  if (value === 0n && (text[end] === 'x' || text[end] === 'X')) {
    parsed = strtoull(text, 16);
    if (parsed.overflow) return fail(parsed.end, 'range');
    value = parsed.value;
    end = parsed.end;
    if (text[end] === '.' || suffixMultiplier(text[end]) > 0n) return invalid;
  } else if (text[end] === '.') {
    const match = /^\.\d+([eE][+-]?\d+)?/.exec(text.slice(end));
    if (!match) {
      end++; // "1.k": a point without digits is skipped
    } else if (match[1] !== undefined) {
      return invalid; // no exponents
    } else {
      const f = Number.parseFloat(`0${match[0]}`);
      const fixed = Math.min(f * 2 ** 64, 2 ** 64 - 2 ** 11);
      fraction = BigInt(Math.trunc(fixed));
      end += match[0].length;
    }
  }

  let multiplier = suffixMultiplier(text[end]);
  if (multiplier > 0n) end++;
  else multiplier = 1n;
  if (multiplier === 1n) {
    if (fraction !== 0n) return invalid; // a fraction needs a scale
  } else {
    const product = fraction * multiplier;
    value = value * multiplier + (product >> 64n) + ((product >> 63n) & 1n);
    if (value >= UINT64_LIMIT) return fail(end, 'range');
  }
  if (end < text.length) return invalid;
  return { ok: true, value };
}

/**
 * A size in bytes, as qemu-img reads sizes ("64k", "1.5G", "0x1000", "512"), checked to be a
 * non-negative integer vdisk can represent. `what` names the value in the message, as QEMU's
 * cvtnum does ("image size", "start offset").
 */
export function parseSize(text: string | number | bigint, what = 'image size'): number {
  if (typeof text === 'number' || typeof text === 'bigint') {
    if (
      typeof text === 'bigint'
        ? text >= 0n && text <= BigInt(Number.MAX_SAFE_INTEGER)
        : Number.isSafeInteger(text) && text >= 0
    ) {
      return Number(text);
    }
    throw new VdiskError('EINVAL', `Invalid ${what} specified: ${text} (must be a non-negative integer below 2^53)`);
  }
  if (typeof text !== 'string') throw new VdiskError('EINVAL', `Invalid ${what} specified: ${String(text)}`);
  const parsed = strtosz(text);
  if (!parsed.ok && parsed.error === 'invalid') {
    throw new VdiskError(
      'EINVAL',
      `Invalid ${what} specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`,
    );
  }
  if (!parsed.ok || parsed.value > INT64_MAX) {
    throw new VdiskError('EINVAL', `Invalid ${what} specified. Must be between 0 and ${INT64_MAX}.`);
  }
  if (parsed.value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VdiskError(
      'EOVERFLOW',
      `Invalid ${what} specified: ${parsed.value} is more than vdisk handles (at most ${Number.MAX_SAFE_INTEGER}, 2^53 - 1)`,
    );
  }
  return Number(parsed.value);
}

const BINARY_PREFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/** frexp's exponent: x = m * 2^e with 0.5 <= m < 1 (0 for 0). */
function frexpExponent(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return 0;
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const biased = (view.getUint16(0) >> 4) & 0x7ff;
  if (biased === 0) return Math.floor(Math.log2(x)) + 1; // subnormal; sizes never are
  return biased - 1022;
}

/**
 * qemu-img's human size (QEMU's size_to_str): "0 B", "4 KiB", "1.46 GiB", "1.12 MiB". It moves
 * to the next unit once the number would reach 1000.
 */
export function formatSize(bytes: number): string {
  const e = frexpExponent(bytes / (1000 / 1024));
  const i = Math.min(Math.trunc((e - 1) / 10), BINARY_PREFIXES.length - 1);
  return `${formatGeneral(bytes / 2 ** (i * 10), 3)} ${BINARY_PREFIXES[i]}B`;
}

/** "1 MiB (1048576 bytes)", as in qemu-img info's "virtual size:" line. */
export function formatSizeWithBytes(bytes: number): string {
  return `${formatSize(bytes)} (${bytes} bytes)`;
}

/**
 * qemu-io's size text (its cvtstr): three decimals with ".000" dropped, "bytes" below 1 KiB:
 * "4 KiB", "1.500 KiB", "64 bytes", "350.429995 bytes" (a rate).
 */
export function formatIoSize(value: number): string {
  const units: Array<[number, string]> = [
    [2 ** 60, ' EiB'],
    [2 ** 50, ' PiB'],
    [2 ** 40, ' TiB'],
    [2 ** 30, ' GiB'],
    [2 ** 20, ' MiB'],
    [2 ** 10, ' KiB'],
  ];
  let text: string;
  let suffix = ' bytes';
  const unit = units.find(([scale]) => value >= scale);
  if (unit) {
    text = formatFixed(value / unit[0], 3);
    suffix = unit[1];
  } else {
    text = formatFixed(value, 6);
  }
  const trim = text.indexOf('.000');
  return trim >= 0 ? text.slice(0, trim) + suffix : text + suffix;
}
