/**
 * The vdisk command line: dispatches `vdisk <command> …` to one module per command, and turns
 * every failure into one line on stderr ("vdisk: <message>") and exit status 1, as qemu-img
 * does. A stack trace is printed only when VDISK_DEBUG is set.
 */
import { readFileSync } from 'node:fs';
import { isVdiskError } from '../block/errors.js';
import { formatNames } from '../engine/formats.js';
import { amendCommand } from './amend.js';
import { type CliCommand, type CliStreams, parseCommandLine } from './args.js';
import { benchCommand } from './bench.js';
import { bitmapCommand } from './bitmap.js';
import { checkCommand } from './check.js';
import { commitCommand } from './commit.js';
import { compareCommand } from './compare.js';
import { convertCommand } from './convert.js';
import { createCommand } from './create.js';
import { ddCommand } from './dd.js';
import { demoCommand } from './demo.js';
import { commandHelp, commandSummary } from './help.js';
import { infoCommand } from './info.js';
import { ioCommand } from './io/command.js';
import { mapCommand } from './map.js';
import { measureCommand } from './measure.js';
import { rebaseCommand } from './rebase.js';
import { resizeCommand } from './resize.js';
import { serveCommand } from './serve.js';
import { snapshotCommand } from './snapshot.js';
import { studyCommand } from './study.js';

export const COMMANDS: readonly CliCommand[] = [
  createCommand,
  infoCommand,
  checkCommand,
  mapCommand,
  convertCommand,
  ddCommand,
  compareCommand,
  resizeCommand,
  snapshotCommand,
  bitmapCommand,
  commitCommand,
  rebaseCommand,
  amendCommand,
  measureCommand,
  ioCommand,
  serveCommand,
  benchCommand,
  studyCommand,
  demoCommand,
];

/** The package version, from package.json (two or three levels up: src/cli or dist/src/cli). */
export function version(): string {
  for (const up of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'vdisk' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return 'unknown';
}

function mainHelp(): string {
  const lines = COMMANDS.map((c) => `  ${commandSummary(c.spec)}`).join('\n');
  return `usage: vdisk <command> [options]
vdisk: a virtual-disk storage engine for RAW and QCOW2 images, byte-compatible with QEMU.

Commands:
${lines}

  vdisk <command> --help   a command's options
  vdisk --version          the version

Sizes take the suffixes k, M, G, T, P, E (powers of 1024). Formats: ${formatNames().join(', ')}.
Errors are one line on stderr and exit status 1 (check, compare and io say more in their --help);
set VDISK_DEBUG=1 for stack traces.
`;
}

export const stdio: CliStreams = {
  out: (text) => {
    process.stdout.write(text);
  },
  err: (text) => {
    process.stderr.write(text);
  },
};

/** Runs one vdisk command line (without the program name) and returns the exit status. */
export async function runCli(argv: readonly string[], streams: CliStreams = stdio): Promise<number> {
  const [name, ...rest] = argv;
  try {
    if (name === undefined) {
      streams.err("vdisk: Expecting a command (see 'vdisk --help')\n");
      return 1;
    }
    if (name === '--help' || name === '-h' || name === 'help') {
      const topic = name === 'help' ? COMMANDS.find((c) => c.spec.name === rest[0]) : undefined;
      streams.out(topic ? commandHelp(topic.spec) : mainHelp());
      return 0;
    }
    if (name === '--version' || name === '-V') {
      streams.out(`vdisk version ${version()}\n`);
      return 0;
    }
    const command = COMMANDS.find((c) => c.spec.name === name);
    if (!command) {
      streams.err(`vdisk: Command not found: ${name} (see 'vdisk --help')\n`);
      return 1;
    }
    // Every command's help comes from its spec, whatever else the command line says.
    if (parseCommandLine(command.spec, rest).values.help) {
      streams.out(commandHelp(command.spec));
      return 0;
    }
    return await command.run(rest, streams);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    streams.err(isVdiskError(err) ? `vdisk: ${message}\n` : `vdisk: internal error: ${message}\n`);
    if (process.env.VDISK_DEBUG && err instanceof Error && err.stack) streams.err(`${err.stack}\n`);
    return 1;
  }
}
