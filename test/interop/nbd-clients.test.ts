/**
 * `vdisk serve` against the NBD clients people use: qemu-io and qemu-img (Unix socket and TCP,
 * with and without TLS), nbdinfo (--list, --map, --map=qemu:allocation-depth), nbdcopy and fio's
 * nbd engine. Where qemu-nbd can serve the same image, its answers are the oracle; the image
 * files are checked with qemu-img afterwards, including after SIGTERM and SIGKILL.
 * Each test skips, saying why, when a tool it needs is not installed.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { makeCertificates } from '../helpers/certificates.js';
import { freePort, type ServerProcess, startQemuNbd, startVdiskServe } from '../helpers/nbd-serve.js';
import { needTools as need, run, VDISK_MAIN } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

async function ok(command: string, args: string[], cwd?: string): Promise<string> {
  const r = await run(command, args, { cwd });
  assert.equal(r.code, 0, `${command} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Runs `fn` with a server and always stops it; fails if it did not exit cleanly on SIGTERM. */
async function withServe(args: string[], fn: (s: ServerProcess) => Promise<void>): Promise<void> {
  const s = await startVdiskServe(args);
  try {
    await fn(s);
  } finally {
    const code = await s.stop('SIGTERM');
    assert.equal(code, 0, `vdisk serve exited with ${code}: ${s.output().stderr}`);
  }
}

async function withQemuNbd(args: string[], socket: string, fn: (s: ServerProcess) => Promise<void>): Promise<void> {
  const s = await startQemuNbd(args, { socket });
  try {
    await fn(s);
  } finally {
    await s.stop('SIGTERM');
  }
}

/** qemu-io commands that write patterns at aligned and unaligned places. */
const WRITES = [
  'write -P 0xab 0 64k',
  'write -P 0xcd 1000 3000',
  'write -P 0x11 1M 1M',
  'write -z 1536k 128k',
  'write -P 0x22 3145216 4k',
  'write -P 0x33 7M 512',
];
const READS = [
  'read -P 0xab 0 1000',
  'read -P 0xcd 1000 3000',
  'read -P 0xab 4000 61536',
  'read -P 0x11 1M 512k',
  'read -P 0 1536k 128k',
  'read -P 0x11 1664k 384k',
  'read -P 0x22 3145216 4k',
  'read -P 0x33 7M 512',
  'read -P 0 7340544 512',
];

function ioArgs(commands: string[]): string[] {
  return commands.flatMap((c) => ['-c', c]);
}

describe('qemu-io and qemu-img over vdisk serve', () => {
  for (const format of ['raw', 'qcow2'] as const) {
    for (const transport of ['unix', 'tcp'] as const) {
      for (const cache of ['writeback', 'none'] as const) {
        it(`${format} over ${transport}, cache=${cache}: patterns written read back, the image matches`, async (t) => {
          if (!need(t, 'qemu-img', 'qemu-io')) return;
          await withTempDir(async (dir) => {
            const image = path.join(dir, `disk.${format}`);
            const expected = path.join(dir, `expected.${format}`);
            await ok('qemu-img', ['create', '-q', '-f', format, image, '8M']);
            await copyFile(image, expected);
            await ok('qemu-io', ['-f', format, ...ioArgs(WRITES), expected]);
            const where = transport === 'unix' ? ['-k', path.join(dir, 'nbd.sock')] : ['-p', '0', '-b', '127.0.0.1'];
            await withServe(['-f', format, `--cache=${cache}`, '-t', '-e', '2', ...where, image], async (s) => {
              await ok('qemu-io', ['-f', 'raw', ...ioArgs(WRITES), s.uri]);
              const out = await ok('qemu-io', ['-f', 'raw', ...ioArgs(READS), s.uri]);
              assert.doesNotMatch(out, /Pattern verification failed/);
              const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', s.uri])) as {
                'virtual-size': number;
              };
              assert.equal(info['virtual-size'], 8 * MiB);
            });
            await ok('qemu-img', ['compare', '-f', format, '-F', format, image, expected]);
            if (format === 'qcow2') await ok('qemu-img', ['check', '-f', 'qcow2', image]);
          });
        });
      }
    }
  }

  it('qemu-img convert copies an image out of vdisk serve and back into it', async (t) => {
    if (!need(t, 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
      await ok('qemu-io', ['-f', 'qcow2', ...ioArgs(WRITES), image]);
      const source = path.join(dir, 'source.raw');
      await ok('qemu-img', ['create', '-q', '-f', 'raw', source, '16M']);
      await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 5M 3M', source]);
      const out = path.join(dir, 'out.raw');
      await withServe(['-f', 'qcow2', '-t', '-e', '0', '-k', path.join(dir, 's'), image], async (s) => {
        await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', s.uri, out]);
        await ok('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'qcow2', out, image]);
        await ok('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, s.uri]);
      });
      await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', source, image]);
      await ok('qemu-img', ['check', '-q', '-f', 'qcow2', image]);
    });
  });
});

/** nbdinfo output without the lines that name the socket. */
function withoutUri(text: string): string {
  return text
    .split('\n')
    .filter((l) => !/^\s*uri:/.test(l))
    .join('\n');
}

/** qemu-img map --output=json turned into what nbdinfo --map prints for base:allocation or allocation depth. */
function expectedMap(json: string, context: 'base' | 'depth'): string {
  const entries = JSON.parse(json) as Array<{
    start: number;
    length: number;
    depth: number;
    present: boolean;
    zero: boolean;
    data: boolean;
  }>;
  const runs: Array<{ start: number; length: number; value: number }> = [];
  for (const e of entries) {
    const value = context === 'base' ? (e.data ? 0 : 1) | (e.zero ? 2 : 0) : e.present ? e.depth + 1 : 0;
    const last = runs[runs.length - 1];
    if (last && last.value === value) last.length += e.length;
    else runs.push({ start: e.start, length: e.length, value });
  }
  const describe = (v: number) => {
    if (context === 'base') return ['data', 'hole', 'zero', 'hole,zero'][v]!;
    return v === 0 ? 'absent' : v === 1 ? 'local' : `backing depth ${v}`;
  };
  return runs
    .map(
      (r) =>
        `${String(r.start).padStart(10)} ${String(r.length).padStart(11)} ${String(r.value).padStart(4)}  ${describe(r.value)}`,
    )
    .join('\n');
}

function normalizeMap(text: string): string {
  return text
    .trim()
    .split('\n')
    .map((l) => {
      const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/.exec(l);
      return m ? `${m[1]!.padStart(10)} ${m[2]!.padStart(11)} ${m[3]!.padStart(4)}  ${m[4]}` : l;
    })
    .join('\n');
}

describe('nbdinfo over vdisk serve', () => {
  it('--list shows what qemu-nbd shows for the same image and options', async (t) => {
    if (!need(t, 'qemu-img', 'qemu-nbd', 'nbdinfo')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
      for (const extra of [[], ['-r'], ['-e', '3'], ['-A', '-x', 'exp', '-D', 'a test disk']]) {
        const args = ['-f', 'qcow2', '-t', ...extra];
        let ours = '';
        let theirs = '';
        await withServe([...args, '-k', path.join(dir, 'v.sock'), image], async (s) => {
          ours = await ok('nbdinfo', ['--list', s.uri]);
        });
        await withQemuNbd([...args, image], path.join(dir, 'q.sock'), async (s) => {
          theirs = await ok('nbdinfo', ['--list', s.uri]);
        });
        assert.equal(withoutUri(ours), withoutUri(theirs), `nbdinfo --list with ${extra.join(' ')}`);
      }
    });
  });

  it('--map and --map=qemu:allocation-depth match qemu-nbd and the image own map', async (t) => {
    if (!need(t, 'qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo')) return;
    await withTempDir(async (dir) => {
      // raw with data and holes; qcow2 with data, zero clusters and unallocated clusters;
      // qcow2 over a raw backing file; qcow2 over a qcow2 backing file; preallocated metadata.
      await ok('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'a.raw'), '16M']);
      await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 1 1M 64k', '-c', 'write -P 2 5M 1M', path.join(dir, 'a.raw')]);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'b.qcow2'), '16M']);
      await ok('qemu-io', [
        '-f',
        'qcow2',
        '-c',
        'write -P 1 1M 64k',
        '-c',
        'write -z 4M 128k',
        '-c',
        'write -P 3 8M 256k',
        '-c',
        'write -z -u 8M 64k',
        path.join(dir, 'b.qcow2'),
      ]);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'a.raw', '-F', 'raw', path.join(dir, 'c.qcow2')]);
      await ok('qemu-io', [
        '-f',
        'qcow2',
        '-c',
        'write -P 9 2M 64k',
        '-c',
        'write -P 9 5M 64k',
        path.join(dir, 'c.qcow2'),
      ]);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', path.join(dir, 'd.qcow2')]);
      await ok('qemu-io', [
        '-f',
        'qcow2',
        '-c',
        'write -P 9 2M 64k',
        '-c',
        'write -z 1M 64k',
        path.join(dir, 'd.qcow2'),
      ]);
      // Metadata preallocation: every cluster mapped, the host file a hole under most of them.
      const e = path.join(dir, 'e.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', e, '16M']);
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 5 3M 192k', e]);
      for (const [name, format] of [
        ['a.raw', 'raw'],
        ['b.qcow2', 'qcow2'],
        ['c.qcow2', 'qcow2'],
        ['d.qcow2', 'qcow2'],
        ['e.qcow2', 'qcow2'],
      ] as const) {
        const image = path.join(dir, name);
        const args = ['-f', format, '-t', '-A', '-r', image];
        const maps: Record<string, string> = {};
        await withServe([...args, '-k', path.join(dir, 'v.sock')], async (s) => {
          maps.ours = normalizeMap(await ok('nbdinfo', ['--map', s.uri]));
          maps.oursDepth = normalizeMap(await ok('nbdinfo', ['--map=qemu:allocation-depth', s.uri]));
        });
        await withQemuNbd(args, path.join(dir, 'q.sock'), async (s) => {
          maps.theirs = normalizeMap(await ok('nbdinfo', ['--map', s.uri]));
          maps.theirsDepth = normalizeMap(await ok('nbdinfo', ['--map=qemu:allocation-depth', s.uri]));
        });
        assert.equal(maps.ours, maps.theirs, `${name}: base:allocation as qemu-nbd`);
        assert.equal(maps.oursDepth, maps.theirsDepth, `${name}: qemu:allocation-depth as qemu-nbd`);
        const json = await ok('qemu-img', ['map', '--output=json', '-f', format, image]);
        assert.equal(maps.ours, expectedMap(json, 'base'), `${name}: base:allocation as qemu-img map`);
        assert.equal(maps.oursDepth, expectedMap(json, 'depth'), `${name}: allocation depth as qemu-img map`);
      }
    });
  });
});

describe('nbdcopy and fio over vdisk serve', () => {
  it('nbdcopy copies out and back in, sparse parts included', async (t) => {
    if (!need(t, 'qemu-img', 'qemu-io', 'nbdcopy')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', image, '32M']);
      await ok('qemu-io', ['-f', 'qcow2', ...ioArgs(WRITES), '-c', 'write -P 0x44 20M 3M', image]);
      const out = path.join(dir, 'out.raw');
      const back = path.join(dir, 'back.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', back, '32M']);
      await withServe(['-f', 'qcow2', '-r', '-t', '-e', '4', '-k', path.join(dir, 'a.sock'), image], async (s) => {
        await ok('nbdcopy', [s.uri, out]);
      });
      await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', out, image]);
      await withServe(['-f', 'qcow2', '-t', '-e', '4', '-k', path.join(dir, 'b.sock'), back], async (s) => {
        await ok('nbdcopy', ['--flush', out, s.uri]);
      });
      await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', back, image]);
      await ok('qemu-img', ['check', '-q', '-f', 'qcow2', back]);
    });
  });

  it('fio --ioengine=nbd randrw with crc32c verification at queue depth 32', async (t) => {
    if (!need(t, 'qemu-img', 'fio')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
      await withServe(['-f', 'qcow2', '-t', '-k', path.join(dir, 's'), image], async (s) => {
        const out = await ok('fio', [
          '--name=verify',
          '--ioengine=nbd',
          `--uri=${s.uri}`,
          '--rw=randrw',
          '--bs=4k',
          '--iodepth=32',
          '--size=16M',
          '--verify=crc32c',
          '--verify_fatal=1',
          '--verify_state_save=0',
          '--runtime=20',
        ]);
        assert.match(out, /err= 0/);
      });
      await ok('qemu-img', ['check', '-q', '-f', 'qcow2', image]);
    });
  });
});

describe('TLS', () => {
  it("serves qemu-img, qemu-io, nbdinfo and vdisk's own client over TLS with X.509 certificates, and refuses plaintext", async (t) => {
    if (!need(t, 'qemu-img', 'qemu-io', 'nbdinfo', 'openssl')) return;
    await withTempDir(async (dir) => {
      const creds = await makeCertificates(dir);
      const image = path.join(dir, 'disk.qcow2');
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
      const port = await freePort();
      await withServe(
        [
          '-f',
          'qcow2',
          '-t',
          '-e',
          '0',
          '-p',
          String(port),
          '-b',
          '127.0.0.1',
          '--tls-creds',
          creds.server,
          '-v',
          image,
        ],
        async () => {
          const object = `tls-creds-x509,id=tls0,dir=${creds.client},endpoint=client`;
          const opts = `driver=nbd,host=127.0.0.1,port=${port},tls-creds=tls0`;
          const info = JSON.parse(
            await ok('qemu-img', ['info', '--output=json', '--object', object, '--image-opts', opts]),
          ) as { 'virtual-size': number };
          assert.equal(info['virtual-size'], 16 * MiB);
          await ok('qemu-io', ['--object', object, '--image-opts', opts, '-c', 'write -P 0x5e 64k 64k']);
          const read = await ok('qemu-io', ['--object', object, '--image-opts', opts, '-c', 'read -P 0x5e 64k 64k']);
          assert.doesNotMatch(read, /Pattern verification failed/);
          const list = await ok('nbdinfo', ['--list', `nbds://127.0.0.1:${port}/?tls-certificates=${creds.client}`]);
          assert.match(list, /newstyle-fixed with TLS/);
          // Without TLS, the server refuses everything but STARTTLS.
          const plain = await run('nbdinfo', [`nbd://127.0.0.1:${port}/`]);
          assert.notEqual(plain.code, 0);
          assert.match(plain.stderr, /TLS|not supported/i);
          // Without a client certificate (verify-peer is on), the TLS handshake fails.
          const anonymous = path.join(dir, 'anonymous');
          await mkdir(anonymous);
          await copyFile(path.join(creds.client, 'ca-cert.pem'), path.join(anonymous, 'ca-cert.pem'));
          const noCert = await run('nbdinfo', ['--list', `nbds://127.0.0.1:${port}/?tls-certificates=${anonymous}`]);
          assert.notEqual(noCert.code, 0);
          // vdisk's own client: nbds:// with the same credentials, and the same refusals.
          const uri = `nbds://127.0.0.1:${port}/?tls-certificates=${creds.client}`;
          await ok(process.execPath, [VDISK_MAIN, 'io', '-f', 'raw', '-c', 'write -P 0x6e 1M 64k', uri]);
          const back = await ok(process.execPath, [VDISK_MAIN, 'io', '-f', 'raw', '-c', 'read -P 0x6e 1M 64k', uri]);
          assert.doesNotMatch(back, /Pattern verification failed/);
          const vdiskPlain = await run(process.execPath, [VDISK_MAIN, 'info', `nbd://127.0.0.1:${port}/`]);
          assert.match(vdiskPlain.stderr, /requires TLS/);
          const vdiskNoCert = await run(process.execPath, [
            VDISK_MAIN,
            'info',
            `nbds://127.0.0.1:${port}/?tls-certificates=${anonymous}`,
          ]);
          assert.match(vdiskNoCert.stderr, /TLS (handshake )?failed: .*certificate/);
        },
      );
      await ok('qemu-img', ['check', '-q', '-f', 'qcow2', image]);
      const back = await ok('qemu-io', [
        '-f',
        'qcow2',
        '-c',
        'read -P 0x5e 64k 64k',
        '-c',
        'read -P 0x6e 1M 64k',
        image,
      ]);
      assert.doesNotMatch(back, /Pattern verification failed/);
    });
  });
});

describe('crash safety', () => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`data written and flushed survives ${signal} of the server`, async (t) => {
      if (!need(t, 'qemu-img', 'qemu-io')) return;
      await withTempDir(async (dir) => {
        const image = path.join(dir, 'disk.qcow2');
        await ok('qemu-img', ['create', '-q', '-f', 'qcow2', image, '32M']);
        const s = await startVdiskServe(['-f', 'qcow2', '-t', '-e', '0', '-k', path.join(dir, 's'), image]);
        let code: number;
        try {
          // qemu-io flushes before it disconnects; the explicit flush is the point of the test.
          await ok('qemu-io', [
            '-f',
            'raw',
            '-c',
            'write -P 0x61 0 1M',
            '-c',
            'write -P 0x62 5M 4k',
            '-c',
            'flush',
            s.uri,
          ]);
          await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x63 9M 64k', '-c', 'flush', s.uri]);
        } finally {
          code = await s.stop(signal);
        }
        assert.equal(code, signal === 'SIGTERM' ? 0 : 137);
        const check = await run('qemu-img', ['check', '-f', 'qcow2', image]);
        assert.ok(check.code === 0 || check.code === 3, `qemu-img check: ${check.code} ${check.stdout}${check.stderr}`);
        const out = await ok('qemu-io', [
          '-f',
          'qcow2',
          '-c',
          'read -P 0x61 0 1M',
          '-c',
          'read -P 0x62 5M 4k',
          '-c',
          'read -P 0x63 9M 64k',
          '-c',
          'read -P 0 1M 4M',
          image,
        ]);
        assert.doesNotMatch(out, /Pattern verification failed/);
        if (signal === 'SIGTERM') {
          // A clean stop leaves a clean image: not dirty, no leaks.
          assert.equal(check.code, 0);
          const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', image])) as {
            'format-specific': { data: { corrupt: boolean } };
          };
          assert.equal(info['format-specific'].data.corrupt, false);
        }
      });
    });
  }

  it('a second server cannot open an image that is being served (image locking)', async (t) => {
    if (!need(t, 'qemu-img')) return;
    await withTempDir(async (dir) => {
      const image = path.join(dir, 'disk.raw');
      await writeFile(image, Buffer.alloc(MiB));
      await withServe(['-f', 'raw', '-t', '-k', path.join(dir, 'a'), image], async () => {
        const second = await run(process.execPath, [
          (await import('../helpers/run.js')).VDISK_MAIN,
          'serve',
          '-f',
          'raw',
          '-k',
          path.join(dir, 'b'),
          image,
        ]);
        assert.equal(second.code, 1);
        assert.match(second.stderr, /lock/);
        const q = await run('qemu-io', ['-f', 'raw', '-c', 'read 0 512', image]);
        assert.notEqual(q.code, 0, 'qemu-io is locked out too');
      });
      assert.equal((await readFile(image)).length, MiB);
    });
  });
});
