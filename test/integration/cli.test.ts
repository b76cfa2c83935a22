/**
 * The vdisk command line, run as a user runs it (node bin/vdisk.cjs …), on real files.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { lines, run, vdisk } from '../helpers/run.js';
import { allocatedBytes, fileState, withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

function isZero(buf: Buffer): boolean {
  return buf.every((b) => b === 0);
}

describe('vdisk create', () => {
  for (const mode of ['off', 'falloc', 'full'] as const) {
    it(`creates a raw image with preallocation=${mode}`, async () => {
      await withTempDir(async (dir) => {
        const img = path.join(dir, 'a.img');
        const r = await vdisk(['create', '-f', 'raw', '-o', `preallocation=${mode}`, img, '1M']);
        assert.equal(r.stderr, '');
        assert.equal(r.code, 0);
        assert.equal(r.stdout, `Formatting '${img}', fmt=raw size=1048576 preallocation=${mode}\n`);
        const data = await readFile(img);
        assert.equal(data.length, MiB);
        assert.ok(isZero(data));
        const used = await allocatedBytes(img);
        if (mode === 'off') assert.ok(used < MiB, `off allocates only the first block, not ${used}`);
        else assert.ok(used >= MiB, `${mode} allocates everything, not ${used}`);
      });
    });
  }

  it('prints no options it was not given, and nothing with -q', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      const r = await vdisk(['create', img, '64k']);
      assert.equal(r.stdout, `Formatting '${img}', fmt=raw size=65536\n`);
      const q = await vdisk(['create', '-q', img, '64k']);
      assert.equal(q.code, 0);
      assert.equal(q.stdout + q.stderr, '');
    });
  });

  it('rounds the file up to whole sectors, as QEMU does', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      for (const [size, length] of [
        ['100', 512],
        ['5000', 5120],
        ['0', 0],
      ] as const) {
        const r = await vdisk(['create', img, size]);
        assert.equal(r.code, 0);
        assert.equal(r.stdout, `Formatting '${img}', fmt=raw size=${size}\n`);
        assert.equal((await readFile(img)).length, length);
      }
    });
  });

  it('truncates and recreates an existing file', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await writeFile(img, Buffer.alloc(2 * MiB, 0x5a));
      const r = await vdisk(['create', img, '1M']);
      assert.equal(r.code, 0);
      const data = await readFile(img);
      assert.equal(data.length, MiB);
      assert.ok(isZero(data));
    });
  });

  it('takes the size from -o size=, options after operands, and several -o', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      const r = await vdisk(['create', img, '-o', 'size=2M', '-o', 'preallocation=falloc']);
      assert.equal(r.code, 0);
      assert.equal(r.stdout, `Formatting '${img}', fmt=raw size=2097152 preallocation=falloc\n`);
      assert.equal((await readFile(img)).length, 2 * MiB);
    });
  });

  it('lists its options with -o help and creates nothing', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      const r = await vdisk(['create', '-f', 'raw', '-o', 'help']);
      assert.equal(r.code, 0);
      assert.equal(
        r.stdout,
        'Supported raw options:\n' +
          '  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)\n' +
          '  size=<size>            - Virtual disk size\n\n' +
          'The protocol level may support further options.\n' +
          'Specify the target filename to include those options.\n',
      );
      const withFile = await vdisk(['create', '-o', 'help', img, '1M']);
      assert.match(withFile.stdout, /^Supported options:\n/);
      assert.equal((await fileState(img)).exists, false);
    });
  });

  it('shows progress with -p', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      const r = await vdisk(['create', '-p', '-o', 'preallocation=full', img, '32M']);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /^Formatting .*\n {4}\(0\.00\/100%\)\r.* {4}\(100\.00\/100%\)\r\n$/s);
    });
  });
});

describe('vdisk info and map', () => {
  it('reports a fresh image like qemu-img info', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      const human = await vdisk(['info', img]);
      assert.equal(human.code, 0);
      assert.match(
        human.stdout,
        new RegExp(
          `^image: ${img}\nfile format: raw\nvirtual size: 1 MiB \\(1048576 bytes\\)\ndisk size: \\d.* (K|M)?i?B\n$`,
        ),
      );
      const json = await vdisk(['info', '--output=json', '-f', 'raw', img]);
      const info = JSON.parse(json.stdout) as Record<string, unknown>;
      assert.deepEqual(Object.keys(info), ['virtual-size', 'filename', 'format', 'actual-size', 'dirty-flag']);
      assert.equal(info['virtual-size'], MiB);
      assert.equal(info.filename, img);
      assert.equal(info.format, 'raw');
      assert.equal(info['dirty-flag'], false);
      assert.equal(info['actual-size'], await allocatedBytes(img));
      const shared = await vdisk(['info', '-U', img]);
      assert.equal(shared.stdout, human.stdout);
    });
  });

  it('maps data and zero ranges', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      await vdisk(['io', '-f', 'raw', '-c', 'write -P 1 512k 64k', img]);
      const json = await vdisk(['map', '--output=json', img]);
      assert.equal(json.code, 0);
      const entries = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
      const covered = entries.reduce((sum, e) => sum + (e.length as number), 0);
      assert.equal(covered, MiB);
      const data = entries.filter((e) => e.data);
      assert.deepEqual(
        data.map((e) => [e.start, e.offset]),
        data.map((e) => [e.start, e.start]),
      );
      assert.ok(
        data.some((e) => (e.start as number) <= 512 * 1024 && (e.start as number) + (e.length as number) >= 576 * 1024),
      );
      const human = await vdisk(['map', img]);
      assert.equal(lines(human.stdout)[0], 'Offset          Length          Mapped to       File');
      assert.equal(lines(human.stdout).length, 1 + data.length);
      const part = await vdisk(['map', '--output=json', '--start-offset=512k', '--max-length=64k', img]);
      assert.deepEqual(JSON.parse(part.stdout), [
        { start: 524288, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 524288 },
      ]);
    });
  });
});

describe('vdisk io', () => {
  it('writes and reads back patterns, with qemu-io output lines', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      const r = await vdisk([
        'io',
        '-f',
        'raw',
        '-c',
        'write -P 0xab 0 4k',
        '-c',
        'read -P 0xab 0 4k',
        '-c',
        'length',
        img,
      ]);
      assert.equal(r.stderr, '');
      assert.equal(r.code, 0);
      const out = lines(r.stdout);
      assert.equal(out[0], 'wrote 4096/4096 bytes at offset 0');
      assert.match(out[1]!, /^4 KiB, 1 ops; \d\d\.\d\d sec \([0-9.]+ (bytes|KiB|MiB|GiB)\/sec and [0-9.]+ ops\/sec\)$/);
      assert.equal(out[2], 'read 4096/4096 bytes at offset 0');
      assert.equal(out[4], '1 MiB');
      const data = await readFile(img);
      assert.ok(data.subarray(0, 4096).every((b) => b === 0xab));
      assert.ok(isZero(data.subarray(4096)));
    });
  });

  it('fails (exit 1) on a pattern mismatch and goes on with the next command', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      const r = await vdisk(['io', '-f', 'raw', '-c', 'read -P 0x11 0 512', '-c', 'read -q -P 0 0 512', img]);
      assert.equal(r.code, 1);
      assert.equal(lines(r.stdout)[0], 'Pattern verification failed at offset 0, 512 bytes');
      assert.equal(lines(r.stdout).length, 3);
    });
  });

  it('dumps with -v, zeroes with -z, discards, truncates, and reads commands from stdin', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      const r = await vdisk(['io', '-f', 'raw', img], {
        input: 'write -P 0x41 0 16\nread -v 0 16\nwrite -z -u 0 64k\ndiscard 64k 64k\nflush\ntruncate 2M\nlength\n',
      });
      assert.equal(r.stderr, '');
      assert.equal(r.code, 0);
      assert.ok(r.stdout.includes('00000000:  41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41  AAAAAAAAAAAAAAAA\n'));
      assert.ok(r.stdout.includes('discard 65536/65536 bytes at offset 65536\n'));
      assert.ok(r.stdout.endsWith('2 MiB\n'));
      assert.equal((await readFile(img)).length, 2 * MiB);
    });
  });

  it('opens with O_DIRECT for -t none where the filesystem has it', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      const r = await vdisk([
        'io',
        '-f',
        'raw',
        '-t',
        'none',
        '-c',
        'write -P 7 1000 3000',
        '-c',
        'read -P 7 1000 3000',
        img,
      ]);
      if (r.code !== 0 && /O_DIRECT/.test(r.stderr)) return; // not on this filesystem: covered below
      assert.equal(r.stderr, '');
      assert.equal(r.code, 0);
      const data = await readFile(img);
      assert.ok(data.subarray(1000, 4000).every((b) => b === 7));
      assert.ok(isZero(data.subarray(4000, 8192)));
    });
  });
});

describe('vdisk demo', () => {
  for (const mode of ['off', 'falloc', 'full']) {
    it(`runs with --prealloc ${mode} and leaves nothing behind`, async () => {
      await withTempDir(async (dir) => {
        const r = await vdisk(['demo', '--prealloc', mode, '--size', '4M', '--dir', dir]);
        assert.equal(r.stderr, '');
        assert.equal(r.code, 0);
        assert.match(r.stdout, new RegExp(`^Formatting '.*demo\\.img', fmt=raw size=4194304 preallocation=${mode}\n`));
        assert.match(r.stdout, /reopened and verified 3 patterns/);
        assert.match(r.stdout, /\nfile format: raw\nvirtual size: 4 MiB \(4194304 bytes\)\n/);
        assert.match(r.stdout, /\nOffset {10}Length {10}Mapped to {7}File\n0 {15}0x/);
        assert.deepEqual(await readdir(dir), []);
      });
    });
  }
});

describe('vdisk help and version', () => {
  it('prints help and version', async () => {
    const help = await vdisk(['--help']);
    assert.equal(help.code, 0);
    for (const name of ['create', 'info', 'map', 'io', 'demo']) assert.match(help.stdout, new RegExp(`\n  ${name} `));
    const version = await vdisk(['--version']);
    const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    assert.equal(version.stdout, `vdisk version ${pkg.version}\n`);
    const sub = await vdisk(['io', '--help']);
    assert.match(sub.stdout, /^usage: vdisk io /);
  });
});

/** A failing command: exit 1, exactly one line on stderr ("vdisk: …" unless said), nothing changed. */
async function assertRefused(
  args: string[],
  file: string,
  expected: RegExp,
  options: { asUser?: { uid: number; gid: number } } = {},
): Promise<void> {
  const before = await fileState(file);
  const r = await vdisk(args, options);
  assert.equal(r.code, 1, `exit status of vdisk ${args.join(' ')}: ${r.stderr}`);
  assert.equal(lines(r.stderr).length, 1, `one line on stderr, got: ${JSON.stringify(r.stderr)}`);
  assert.match(lines(r.stderr)[0]!, expected);
  assert.ok(!r.stderr.includes('    at '), 'no stack trace');
  assert.deepEqual(await fileState(file), before, `${file} unchanged`);
}

describe('bad input: one line on stderr, exit 1, nothing changed', () => {
  async function withImage(fn: (dir: string, img: string) => Promise<void>): Promise<void> {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      await vdisk(['io', '-f', 'raw', '-c', 'write -P 0x99 0 64k', img]);
      await fn(dir, img);
    });
  }

  const SIZE_MESSAGE = /^vdisk: Invalid image size specified\. You may use k, M, G, T, P or E suffixes for kilobytes/;
  const cases: Array<[string, (img: string) => string[], RegExp]> = [
    [
      'unknown cache mode',
      (img) => ['io', '-f', 'raw', '-t', 'bogus', '-c', 'read 0 1', img],
      /^vdisk: Invalid cache option: bogus/,
    ],
    [
      'unknown format (io)',
      (img) => ['io', '-f', 'bogus', '-c', 'write 0 1', img],
      /^vdisk: Unknown file format 'bogus'$/,
    ],
    ['unknown format (info)', (img) => ['info', '-f', 'bogus', img], /^vdisk: Unknown file format 'bogus'$/],
    ['unknown format (create)', (img) => ['create', '-f', 'bogus', img, '1M'], /: Unknown file format 'bogus'$/],
    ['unparsable size', (img) => ['create', img, 'abc'], SIZE_MESSAGE],
    ['fraction without a unit', (img) => ['create', img, '1.5'], SIZE_MESSAGE],
    ['negative size', (img) => ['create', img, '-1'], SIZE_MESSAGE],
    ['negative size after --', (img) => ['create', img, '--', '-5'], SIZE_MESSAGE],
    [
      'size out of range',
      (img) => ['create', img, '16E'],
      /^vdisk: Invalid image size specified\. Must be between 0 and 9223372036854775807\.$/,
    ],
    [
      'size above 2^53',
      (img) => ['create', img, '7E'],
      /^vdisk: Invalid image size specified: .* more than vdisk handles/,
    ],
    [
      'metadata preallocation for raw',
      (img) => ['create', '-o', 'preallocation=metadata', img, '1M'],
      /: Unsupported preallocation mode: metadata$/,
    ],
    [
      'bad preallocation',
      (img) => ['create', '-o', 'preallocation=bogus', img, '1M'],
      /: invalid parameter value: bogus$/,
    ],
    ['unknown option', (img) => ['create', '-o', 'foo=bar', img, '1M'], /: Invalid parameter 'foo'$/],
    [
      'size given twice',
      (img) => ['create', '-o', 'size=2M', img, '1M'],
      /: The image size must be specified only once$/,
    ],
    ['no size', (img) => ['create', img], /: Image creation needs a size parameter$/],
    [
      'bad option list',
      (img) => ['create', '-o', 'preallocation=off,', img, '1M'],
      /^vdisk: Invalid option list: preallocation=off,$/,
    ],
    ['unknown command option', (img) => ['create', '-x', img, '1M'], /^vdisk: unrecognized option '-x'/],
    [
      'bad --output',
      (img) => ['map', '--output=xml', img],
      /^vdisk: --output must be used with human or json as argument\.$/,
    ],
    ['two file names', (img) => ['info', img, img], /^vdisk: Expecting one image file name/],
    [
      'read past the end',
      (img) => ['io', '-f', 'raw', '-c', 'read 1M 1', img],
      /^read failed: Request past the end of the image: offset 1048576 \+ length 1 > image length 1048576$/,
    ],
    [
      'write past the end',
      (img) => ['io', '-f', 'raw', '-c', 'write 1020k 8k', img],
      /^write failed: Request past the end of the image/,
    ],
    [
      'write to a read-only image',
      (img) => ['io', '-f', 'raw', '-r', '-c', 'write 0 1', img],
      /^vdisk: The image is opened read-only$/,
    ],
    ['bad pattern', (img) => ['io', '-f', 'raw', '-c', 'write -P 300 0 1', img], /^300 is not a valid pattern byte$/],
    ['bad offset', (img) => ['io', '-f', 'raw', '-c', 'write 1x 1', img], /^Parsing error: non-numeric argument/],
    ['unknown io command', (img) => ['io', '-f', 'raw', '-c', 'frobnicate', img], /^command "frobnicate" not found$/],
    ['unknown subcommand', () => ['frobnicate'], /^vdisk: Command not found: frobnicate/],
    ['demo with metadata', () => ['demo', '--prealloc', 'metadata'], /^vdisk: Unsupported preallocation mode/],
  ];
  for (const [what, args, expected] of cases) {
    it(what, () => withImage((_dir, img) => assertRefused(args(img), img, expected)));
  }

  it('a size the filesystem cannot hold leaves an existing image alone', async () => {
    await withImage(async (_dir, img) => {
      const before = await fileState(img);
      const r = await vdisk(['create', img, '1P']);
      if (r.code === 0) return; // this filesystem takes 1 PiB files (xfs, btrfs): nothing to refuse
      assert.equal(r.code, 1);
      assert.deepEqual(lines(r.stderr), [`vdisk: ${img}: The image size is too large for file format 'raw'`]);
      assert.deepEqual(await fileState(img), before);
    });
  });

  for (const command of ['info', 'map']) {
    it(`missing file (${command})`, async () => {
      await withTempDir(async (dir) => {
        const missing = path.join(dir, 'missing.img');
        await assertRefused(
          [command, missing],
          missing,
          /^vdisk: Could not open '.*missing\.img': No such file or directory$/,
        );
      });
    });
  }

  it('missing file (io) is not created', async () => {
    await withTempDir(async (dir) => {
      const missing = path.join(dir, 'missing.img');
      await assertRefused(['io', '-f', 'raw', '-c', 'write 0 1', missing], missing, /No such file or directory$/);
    });
  });

  it('missing directory (create)', async () => {
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'nodir', 'a.img');
      await assertRefused(['create', img, '1M'], img, /: Could not create '.*a\.img': No such file or directory$/);
    });
  });

  it('unwritable directory (create)', async (t) => {
    await withTempDir(async (dir) => {
      const ro = path.join(dir, 'ro');
      await mkdir(ro);
      await chmod(ro, 0o555);
      await chmod(dir, 0o755);
      const img = path.join(ro, 'a.img');
      const root = process.getuid?.() === 0;
      if (root) {
        // Root ignores directory permissions: run as nobody, if that can run vdisk here.
        const probe = await run('setpriv', [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          '-e',
          '0',
        ]).catch(() => undefined);
        if (probe?.code !== 0) {
          t.skip('running as root without setpriv: cannot test directory permissions');
          return;
        }
      }
      await assertRefused(['create', img, '1M'], img, /: Could not create '.*a\.img': Permission denied$/, {
        asUser: root ? { uid: 65534, gid: 65534 } : undefined,
      });
    });
  });

  it('O_DIRECT on tmpfs (-t none on a file in /dev/shm)', async (t) => {
    const shm = '/dev/shm';
    if (!existsSync(shm)) {
      t.skip('no /dev/shm here');
      return;
    }
    await withTempDir(async (dir) => {
      const img = path.join(dir, 'a.img');
      await vdisk(['create', '-q', img, '1M']);
      const r = await vdisk(['io', '-f', 'raw', '-t', 'none', '-c', 'write 0 4k', img]);
      if (r.code === 0) {
        t.skip('tmpfs supports O_DIRECT on this kernel (Linux 6.6 and later): nothing to refuse');
        return;
      }
      await assertRefused(['io', '-f', 'raw', '-t', 'none', '-c', 'write 0 4k', img], img, /does not support O_DIRECT/);
    }, shm);
  });
});
