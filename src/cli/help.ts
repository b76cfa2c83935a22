/** A command's help text and its line in `vdisk --help`, made from its CommandSpec. */
import { type CommandSpec, DEFAULT_EXIT_STATUS, type OptionSpec } from './args.js';

const WIDTH = 100;

function optionName(name: string, o: OptionSpec): string {
  const arg = o.type === 'string' ? (o.arg ?? 'VALUE') : '';
  return o.short ? `-${o.short}${arg ? ` ${arg}` : ''}` : `--${name}${arg ? `=${arg}` : ''}`;
}

/** The options and operands of the usage line, wrapped under the command name. */
export function usageLine(spec: CommandSpec): string {
  const words = Object.entries(spec.options).map(([name, o]) => `[${optionName(name, o)}]${o.multiple ? '...' : ''}`);
  words.push(spec.operands);
  const head = `usage: vdisk ${spec.name} `;
  const lines: string[] = [];
  let line = head;
  for (const word of words) {
    if (line.length + word.length > WIDTH && line.trim() !== head.trim()) {
      lines.push(line.trimEnd());
      line = ' '.repeat(head.length);
    }
    line += `${word} `;
  }
  lines.push(line.trimEnd());
  return lines.join('\n');
}

function optionList(spec: CommandSpec): string {
  const options = { ...spec.options, help: { type: 'boolean', short: 'h', help: 'this help' } as OptionSpec };
  const rows = Object.entries(options).map(([name, o]) => {
    const arg = o.type === 'string' ? ` ${o.arg ?? 'VALUE'}` : '';
    const left = o.short ? `-${o.short}, --${name}${arg}` : `    --${name}${arg}`;
    return [left, o.help] as const;
  });
  const width = Math.min(32, Math.max(...rows.map(([left]) => left.length)));
  return rows
    .map(([left, help]) => {
      const pad = left.length > width ? `\n  ${' '.repeat(width + 2)}` : ' '.repeat(width - left.length + 2);
      const text = help.split('\n').join(`\n  ${' '.repeat(width + 2)}`);
      return `  ${left}${pad}${text}`;
    })
    .join('\n');
}

/** The whole text of `vdisk <command> --help`. */
export function commandHelp(spec: CommandSpec): string {
  let text = `${usageLine(spec)}\n\n${spec.description.trim()}\n\n${optionList(spec)}\n`;
  if (spec.notes) text += `\n${spec.notes.trim()}\n`;
  const status = (spec.exitStatus ?? DEFAULT_EXIT_STATUS).map(
    ([code, meaning]) => `  ${String(code).padEnd(3)} ${meaning}`,
  );
  text += `\nExit status:\n${status.join('\n')}\n`;
  return text;
}

/** The command's line in `vdisk --help`. */
export function commandSummary(spec: CommandSpec): string {
  return `${spec.name.padEnd(8)} ${spec.purpose}`;
}
