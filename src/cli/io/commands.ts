/** Every command `vdisk io` knows, and `help`, which lists them as qemu-io does. */
import type { CommandInfo } from './command-info.js';
import { closeCommand, openCommand, quitCommand, sleepCommand } from './commands-file.js';
import { allocCommand, infoCommand, lengthCommand, mapCommand } from './commands-info.js';
import { discardCommand, flushCommand, readCommand, truncateCommand, writeCommand } from './commands-rw.js';
import { aioFlushCommand, aioReadCommand, aioWriteCommand, readvCommand, writevCommand } from './commands-vector.js';
import { CommandError } from './text.js';

const helpCommand: CommandInfo = {
  name: 'help',
  alias: '?',
  args: '[command]',
  oneline: 'help for one or all commands',
  argmin: 0,
  argmax: 1,
  noFile: true,
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

const COMMANDS: readonly CommandInfo[] = [
  readCommand,
  readvCommand,
  writeCommand,
  writevCommand,
  aioReadCommand,
  aioWriteCommand,
  aioFlushCommand,
  discardCommand,
  flushCommand,
  truncateCommand,
  lengthCommand,
  infoCommand,
  mapCommand,
  allocCommand,
  openCommand,
  closeCommand,
  sleepCommand,
  helpCommand,
  quitCommand,
];

function oneline(command: CommandInfo): string {
  return `${command.name} ${command.args ? `${command.args} ` : command.name === 'map' ? ' ' : ''}-- ${command.oneline}\n`;
}

export function findCommand(name: string): CommandInfo | undefined {
  return COMMANDS.find((c) => c.name === name || c.alias === name);
}

/** The names of the commands an IoSession knows. */
export function ioCommandNames(): string[] {
  return COMMANDS.map((c) => c.name);
}
