/**
 * Command-line parsing shared by the subcommands: util.parseArgs, with the two things qemu-img
 * users expect from getopt that parseArgs does not do by itself: options and operands in any
 * order with "-5" or "-1G" taken as an operand (so that a negative size gets the size message,
 * not "unknown option"), and one-line messages for unknown options and missing values.
 */
import { parseArgs } from 'node:util';
import { VdiskError } from '../block/errors.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** What the value is called in the help: "fmt", "MODE", "N". */
  arg?: string;
  /** One line (or a few) for the command's option list. */
  help: string;
}

export type OptionSpecs = Record<string, OptionSpec>;

/**
 * Everything a command's help says, declared once: the usage line, the option list and the
 * one-line summary of `vdisk --help` are all made from it (help.ts), so they cannot disagree.
 */
export interface CommandSpec {
  name: string;
  /** The operands after the options, as the usage line shows them: "filename [size]". */
  operands: string;
  /** What the command does, in a few words, for `vdisk --help`. */
  purpose: string;
  /** The paragraphs after the usage line. */
  description: string;
  options: OptionSpecs;
  /** Text after the option list (commands, workloads). */
  notes?: string;
  /** Each exit status and what it means; default: 0 success, 1 failure (DEFAULT_EXIT_STATUS). */
  exitStatus?: ReadonlyArray<readonly [number, string]>;
}

export const DEFAULT_EXIT_STATUS: ReadonlyArray<readonly [number, string]> = [
  [0, 'success'],
  [1, 'failure (one line on stderr says why)'],
];

export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** The options in the order given (for commands whose options are steps: bitmap). */
  order: string[];
}

/** Where a command prints: stdout and stderr, or anything else for tests and the JS API. */
export interface CliStreams {
  out(text: string): void;
  err(text: string): void;
}

export interface CliCommand {
  spec: CommandSpec;
  run(args: string[], streams: CliStreams): Promise<number>;
}

/** A usage mistake: one line, and a pointer to the command's help. */
export function usageError(command: string, message: string): VdiskError {
  return new VdiskError('EINVAL', `${message} (see 'vdisk ${command} --help')`);
}

export function parseCommandLine(spec: CommandSpec, args: readonly string[]): ParsedArgs {
  const command = spec.name;
  const options: OptionSpecs = { ...spec.options, help: { type: 'boolean', short: 'h', help: 'this help' } };
  const { tokens } = parseArgs({ args: [...args], options, strict: false, allowPositionals: true, tokens: true });
  const values: ParsedArgs['values'] = {};
  const positionals: string[] = [];
  const order: string[] = [];
  const operandIndexes = new Set<number>();
  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') {
      positionals.push(token.value);
      continue;
    }
    const raw = args[token.index]!;
    if (/^-[0-9.]/.test(raw)) {
      // "-1", "-10M": a negative number is an operand, as getopt would have it after "--".
      if (!operandIndexes.has(token.index)) positionals.push(raw);
      operandIndexes.add(token.index);
      continue;
    }
    const spec = options[token.name as keyof typeof options] as OptionSpec | undefined;
    if (!spec) throw usageError(command, `unrecognized option '${token.rawName}'`);
    order.push(token.name);
    if (spec.type === 'string') {
      if (token.value === undefined) throw usageError(command, `option '${token.rawName}' needs a value`);
      if (spec.multiple) {
        const list = (values[token.name] as string[] | undefined) ?? [];
        list.push(token.value);
        values[token.name] = list;
      } else {
        values[token.name] = token.value;
      }
    } else {
      if (token.inlineValue) throw usageError(command, `option '${token.rawName}' does not take a value`);
      values[token.name] = true;
    }
  }
  return { values, positionals, order };
}

/** The --output argument: human (default) or json, with qemu-img's message otherwise. */
export function outputFormat(value: unknown): 'human' | 'json' {
  if (value === undefined || value === 'human') return 'human';
  if (value === 'json') return 'json';
  throw new VdiskError('EINVAL', '--output must be used with human or json as argument.');
}

/** Exactly one image file name, as qemu-img info and map want. */
export function oneFilename(command: string, positionals: readonly string[]): string {
  if (positionals.length !== 1) throw usageError(command, 'Expecting one image file name');
  return positionals[0]!;
}
