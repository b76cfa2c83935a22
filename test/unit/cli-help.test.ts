/**
 * One source of truth for the command line: each command's --help is made from the option spec
 * it parses with, so every option it takes is in its help and usage line, and the README's
 * command table names every command with the exit statuses its help gives.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_EXIT_STATUS, parseCommandLine } from '../../src/cli/args.js';
import { commandHelp, usageLine } from '../../src/cli/help.js';
import { IO_DEFAULT_CACHE } from '../../src/cli/io/open-options.js';
import { COMMANDS, runCli } from '../../src/cli/run.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(args, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

/** The README's command table: command name -> its exit status column. */
function readmeTable(): Map<string, string> {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const rows = new Map<string, string>();
  for (const m of readme.matchAll(/^\| `vdisk ([a-z-]+)` \|(.*)\|$/gm)) {
    const cells = m[2]!.split(/(?<!\\)\|/).map((c) => c.trim());
    rows.set(m[1]!, cells[cells.length - 1]!);
  }
  return rows;
}

describe('every command’s help comes from its option spec', () => {
  for (const { spec } of COMMANDS) {
    it(`vdisk ${spec.name} --help`, async () => {
      const help = commandHelp(spec);
      for (const flag of ['--help', '-h']) {
        const r = await cli([spec.name, flag]);
        assert.equal(r.code, 0);
        assert.equal(r.err, '');
        assert.equal(r.out, help);
      }
      assert.deepEqual(await cli(['help', spec.name]), { code: 0, out: help, err: '' });
      const usage = usageLine(spec);
      for (const [name, option] of Object.entries(spec.options)) {
        // Listed with its long name (and short one), and in the usage line.
        const listed = option.short ? `-${option.short}, --${name}` : `    --${name}`;
        assert.ok(help.includes(listed), `${spec.name}: --${name} is not in the option list`);
        const word = option.short ? `[-${option.short}` : `[--${name}`;
        assert.ok(usage.includes(word), `${spec.name}: --${name} is not in the usage line`);
        // And the parser takes exactly what is listed.
        const value = option.type === 'string' ? ['x'] : [];
        assert.doesNotThrow(() => parseCommandLine(spec, [`--${name}`, ...value]));
        if (option.short) assert.doesNotThrow(() => parseCommandLine(spec, [`-${option.short}`, ...value]));
      }
      assert.throws(() => parseCommandLine(spec, ['--not-an-option']), /unrecognized option '--not-an-option'/);
      // Every exit status, one a line.
      for (const [code, meaning] of spec.exitStatus ?? DEFAULT_EXIT_STATUS) {
        assert.ok(help.includes(`\n  ${String(code).padEnd(3)} ${meaning}\n`), `${spec.name}: exit status ${code}`);
      }
    });
  }

  it('a short option no command declares is refused in every command', () => {
    for (const { spec } of COMMANDS) {
      const shorts = new Set(Object.values(spec.options).map((o) => o.short));
      const unused = 'jJKlLmMYyzZ'.split('').find((c) => !shorts.has(c))!;
      assert.throws(() => parseCommandLine(spec, [`-${unused}`]), /unrecognized option/, spec.name);
    }
  });
});

describe("the README's command table", () => {
  const table = readmeTable();

  it('lists every command, and nothing else', () => {
    assert.deepEqual([...table.keys()].sort(), COMMANDS.map((c) => c.spec.name).sort());
  });

  it("gives each command's exit statuses as its help does", () => {
    for (const { spec } of COMMANDS) {
      const codes = [...table.get(spec.name)!.matchAll(/(?:^|, )(\d+)/g)].map((m) => Number(m[1]));
      assert.deepEqual(
        codes,
        (spec.exitStatus ?? DEFAULT_EXIT_STATUS).map(([code]) => code),
        spec.name,
      );
    }
  });

  it("names io's default cache mode as io's help does", () => {
    const io = COMMANDS.find((c) => c.spec.name === 'io')!.spec;
    assert.match(io.options.cache!.help, new RegExp(`default ${IO_DEFAULT_CACHE}`));
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    assert.match(readme, new RegExp(`\\| \`vdisk io\` \\|.*default cache ${IO_DEFAULT_CACHE}`));
    assert.match(readme, new RegExp(`\`${IO_DEFAULT_CACHE}\` \\(the default for \`io\``));
  });
});
