/**
 * `-o key=value,key2=value2` option lists as QEMU's QemuOpts reads them (util/qemu-option.c):
 * a ',' inside a value is written ',,'; a key without '=' is a flag ("foo" is foo=on, "nofoo"
 * is foo=off); a later key overrides an earlier one; "help" or "?" asks for the list.
 */
import { VdiskError } from '../block/errors.js';
import type { CreateOptionDesc, CreateOptionValue } from '../format/create-options.js';
import { strtosz } from './size.js';

export interface OptionPair {
  name: string;
  value: string;
}

/** One value up to an unescaped ',' (QEMU's get_opt_value); ",," stands for ','. */
function readValue(text: string, from: number): { value: string; end: number } {
  let value = '';
  let p = from;
  for (;;) {
    const comma = text.indexOf(',', p);
    const offset = comma < 0 ? text.length : comma;
    value += text.slice(p, offset);
    if (offset < text.length && text[offset + 1] === ',') {
      value += ',';
      p = offset + 2;
      continue;
    }
    return { value, end: offset };
  }
}

/** Splits an option list into name/value pairs, in order, as QEMU's opts_do_parse walks it. */
export function splitOptionList(text: string): OptionPair[] {
  const pairs: OptionPair[] = [];
  let p = 0;
  while (p < text.length) {
    const rest = text.slice(p);
    const stop = rest.search(/[=,]/);
    const len = stop < 0 ? rest.length : stop;
    let pair: OptionPair;
    if (rest[len] !== '=') {
      const name = rest.slice(0, len);
      pair = name.startsWith('no') ? { name: name.slice(2), value: 'off' } : { name, value: 'on' };
      p += len;
    } else {
      const name = rest.slice(0, len);
      const { value, end } = readValue(text, p + len + 1);
      pair = { name, value };
      p = end;
    }
    if (text[p] === ',') p++;
    if (pair.name !== 'id') pairs.push(pair);
  }
  return pairs;
}

/** qemu-img's check on each -o argument: not empty, no leading ',' and no unescaped trailing ','. */
export function isValidOptionList(text: string): boolean {
  if (text.length === 0 || text[0] === ',') return false;
  let i = text.length;
  while (i > 0 && text[i - 1] === ',') i--;
  return (text.length - i) % 2 === 0;
}

/** True when the list asks for help: a flag named "help" or "?". */
export function hasHelpOption(text: string): boolean {
  return splitOptionList(text).some((pair) => pair.value === 'on' && (pair.name === 'help' || pair.name === '?'));
}

/** Joins several -o arguments into one list, as qemu-img accumulates them. */
export function joinOptionLists(lists: readonly string[]): string {
  for (const list of lists) {
    if (!isValidOptionList(list)) throw new VdiskError('EINVAL', `Invalid option list: ${list}`);
  }
  return lists.join(',');
}

export interface ResolvedOption {
  desc: CreateOptionDesc;
  /** The text the user gave (flags: "on"/"off"). */
  text: string;
  value: CreateOptionValue;
}

function parseBool(desc: CreateOptionDesc, text: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(text)) return true;
  if (['off', 'no', 'false', 'n'].includes(text)) return false;
  throw new VdiskError('EINVAL', `Parameter '${desc.name}' expects 'on' or 'off'`);
}

function parseNumber(desc: CreateOptionDesc, text: string): number {
  // qemu_strtou64 in base 0: decimal, 0x hex or 0 octal.
  const m = /^[ \t\n\v\f\r]*\+?(?:(0[xX][0-9a-fA-F]+)|0([0-7]*)|([1-9][0-9]*))$/.exec(text);
  const value = !m ? Number.NaN : Number(m[1] ? BigInt(m[1]) : m[3] ? BigInt(m[3]) : BigInt(`0o${m[2] || '0'}`));
  if (!Number.isSafeInteger(value)) throw new VdiskError('EINVAL', `Parameter '${desc.name}' expects a number`);
  return value;
}

function parseSizeValue(desc: CreateOptionDesc, text: string): number {
  const parsed = strtosz(text);
  if (!parsed.ok && parsed.error === 'range') {
    throw new VdiskError('EINVAL', `Value '${text}' is out of range for parameter '${desc.name}'`);
  }
  if (!parsed.ok) {
    throw new VdiskError(
      'EINVAL',
      `Parameter '${desc.name}' expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta- and exabytes)`,
    );
  }
  if (parsed.value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VdiskError(
      'EOVERFLOW',
      `Value '${text}' for parameter '${desc.name}' is more than vdisk handles (at most ${Number.MAX_SAFE_INTEGER})`,
    );
  }
  return Number(parsed.value);
}

/** Converts one option's text to its type, with QEMU's messages for bad values. */
export function parseOptionValue(desc: CreateOptionDesc, text: string): CreateOptionValue {
  switch (desc.type) {
    case 'bool':
      return parseBool(desc, text);
    case 'num':
      return parseNumber(desc, text);
    case 'size':
      return parseSizeValue(desc, text);
    case 'str':
      if (desc.values && !desc.values.includes(text)) {
        throw new VdiskError('EINVAL', `invalid parameter value: ${text}`);
      }
      return text;
  }
}

/**
 * Checks an option list (text, or an object of values) against a format's options: unknown
 * names are "Invalid parameter 'foo'", bad values name the problem. The result is keyed by
 * option name; a later occurrence wins.
 */
export function resolveOptions(
  given: string | Readonly<Record<string, CreateOptionValue>>,
  descs: readonly CreateOptionDesc[],
): Map<string, ResolvedOption> {
  const pairs =
    typeof given === 'string'
      ? splitOptionList(given)
      : Object.entries(given).map(([name, value]) => ({
          name,
          value: typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value),
        }));
  const resolved = new Map<string, ResolvedOption>();
  for (const pair of pairs) {
    const desc = descs.find((d) => d.name === pair.name);
    if (!desc) throw new VdiskError('EINVAL', `Invalid parameter '${pair.name}'`);
    resolved.set(desc.name, { desc, text: pair.value, value: parseOptionValue(desc, pair.value) });
  }
  return resolved;
}

function typeName(type: CreateOptionDesc['type']): string {
  return type === 'bool' ? 'bool (on/off)' : type;
}

/**
 * The option list as `-o help` prints it (qemu_opts_print_help): sorted, "  name=<type>" padded
 * to 24 columns, " - help".
 */
export function formatOptionHelp(descs: readonly CreateOptionDesc[]): string {
  const lines = descs.map((desc) => {
    const head = `  ${desc.name}=<${typeName(desc.type)}>`;
    return `${head.padEnd(24)} - ${desc.help}`;
  });
  lines.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return lines.map((line) => `${line}\n`).join('');
}

/**
 * The options part of qemu-img create's "Formatting …" line (qemu_opts_print): in the format's
 * declared order, given options and defaults; strings with ',' doubled, sizes and numbers as
 * parsed integers, booleans as given.
 */
export function formatOptionSummary(
  descs: readonly CreateOptionDesc[],
  given: ReadonlyMap<string, ResolvedOption>,
): string {
  const parts: string[] = [];
  for (const desc of descs) {
    const option = given.get(desc.name);
    const text = option ? option.text : desc.defaultValue;
    if (text === undefined) continue;
    if (desc.type === 'str') parts.push(`${desc.name}=${text.replaceAll(',', ',,')}`);
    else if ((desc.type === 'size' || desc.type === 'num') && option) parts.push(`${desc.name}=${option.value}`);
    else parts.push(`${desc.name}=${text}`);
  }
  return parts.join(' ');
}
