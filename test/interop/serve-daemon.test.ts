/**
 * qemu-nbd's --fork, --pid-file, -s (--snapshot) and --object tls-creds-x509 with --tls-creds
 * ID, run beside qemu-nbd on the same arguments: the same exit status, a pid file naming the
 * live server, nbdinfo and qemu-io served through the export, the socket gone when the server
 * is killed, the image untouched under -s, and the same refusals.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { makeCertificates } from '../helpers/certificates.js';
import { freePort, startQemuNbd, startVdiskServe } from '../helpers/nbd-serve.js';
import { hasCommand, lines, run, vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';

const TOOLS = ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'];
const HAVE = TOOLS.every(hasCommand);
if (!HAVE) console.error(`SKIPPED: serve --fork/-s/--object tests need ${TOOLS.join(', ')}`);

function need(t: TestContext, ...more: string[]): boolean {
  const missing = [...TOOLS, ...more].filter((tool) => !hasCommand(tool));
  if (missing.length > 0) t.skip(`not installed: ${missing.join(', ')}`);
  return missing.length === 0;
}

async function ok(command: string, args: string[], cwd?: string): Promise<string> {
  const r = await run(command, args, { cwd });
  assert.equal(r.code, 0, `${command} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, file: string): Promise<void> {
  for (let i = 0; i < 100 && (alive(pid) || existsSync(file)); i++) await new Promise((r) => setTimeout(r, 50));
}

async function image(dir: string): Promise<string> {
  const file = path.join(dir, 'disk.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', file, '4M']);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 0 1M', file]);
  return file;
}

describe('serve --fork and --pid-file, as qemu-nbd', { skip: !HAVE && 'QEMU tools not installed' }, () => {
  for (const server of ['vdisk', 'qemu-nbd'] as const) {
    it(`${server}: returns once listening; the pid file names the live server; killing it removes the socket`, async (t) => {
      if (!need(t)) return;
      await withTempDir(async (dir) => {
        const file = await image(dir);
        const socket = path.join(dir, 's.sock');
        const pidFile = path.join(dir, 's.pid');
        const args = ['--fork', '-t', '--pid-file', pidFile, '-k', socket, '-f', 'qcow2', file];
        const r = server === 'vdisk' ? await vdisk(['serve', ...args]) : await run('qemu-nbd', args);
        assert.equal(r.code, 0, r.stderr);
        if (server === 'vdisk') assert.equal(r.stdout, `vdisk serve: listening on nbd+unix:///?socket=${socket}\n`);
        const pid = Number((await readFile(pidFile, 'utf8')).trim());
        assert.ok(Number.isInteger(pid) && pid !== process.pid && alive(pid), `pid ${pid}`);
        const uri = `nbd+unix:///?socket=${socket}`;
        assert.match(await ok('nbdinfo', ['--size', uri]), /^4194304\n$/);
        await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 1M 64k', uri]);
        const back = await ok('qemu-io', ['-f', 'raw', '-c', 'read -P 0x55 1M 64k', '-c', 'read -P 0x44 0 1M', uri]);
        assert.doesNotMatch(back, /Pattern verification failed/);
        process.kill(pid, 'SIGTERM');
        await waitGone(pid, socket);
        assert.ok(!alive(pid));
        assert.ok(!existsSync(socket));
        // vdisk removes its pid file; qemu-nbd 7.2 leaves it behind.
        if (server === 'vdisk') assert.ok(!existsSync(pidFile));
        await ok('qemu-img', ['check', '-q', file]);
        const read = await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x55 1M 64k', file]);
        assert.doesNotMatch(read, /Pattern verification failed/);
      });
    });
  }

  it('a server that cannot start: --fork exits 1 with its one line, as qemu-nbd; no socket, no pid file', async (t) => {
    if (!need(t)) return;
    await withTempDir(async (dir) => {
      const socket = path.join(dir, 's.sock');
      const pidFile = path.join(dir, 's.pid');
      const args = ['--fork', '--pid-file', pidFile, '-k', socket, '-f', 'qcow2', path.join(dir, 'missing.qcow2')];
      const v = await vdisk(['serve', ...args]);
      assert.equal(v.code, 1);
      assert.equal(lines(v.stderr).length, 1, v.stderr);
      assert.match(v.stderr, /^vdisk: Could not open .*missing\.qcow2.*No such file or directory\n$/);
      assert.ok(!existsSync(socket));
      assert.ok(!existsSync(pidFile));
      // qemu-nbd fails the same way (and leaves its socket file behind).
      const q = await run('qemu-nbd', args);
      assert.equal(q.code, 1);
    });
  });
});

describe('serve -s: a temporary overlay, as qemu-nbd --snapshot', { skip: !HAVE && 'QEMU tools not installed' }, () => {
  for (const server of ['vdisk', 'qemu-nbd'] as const) {
    it(`${server}: writes read back through the export; the image is byte-identical afterwards`, async (t) => {
      if (!need(t)) return;
      await withTempDir(async (dir) => {
        const file = await image(dir);
        const tmp = path.join(dir, 'tmp');
        await mkdir(tmp);
        const before = await fileState(file);
        const socket = path.join(dir, 's.sock');
        const args = ['-s', '-t', '-f', 'qcow2', file];
        const env = { ...process.env, TMPDIR: tmp };
        const s =
          server === 'vdisk'
            ? await startVdiskServe(['-k', socket, ...args], env)
            : await startQemuNbd(args, { socket });
        try {
          const uri = `nbd+unix:///?socket=${socket}`;
          await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 64k', '-c', 'write -z 1M 64k', uri]);
          const back = await ok('qemu-io', [
            '-f',
            'raw',
            '-c',
            'read -P 0x77 0 64k',
            '-c',
            'read -P 0x44 64k 960k',
            '-c',
            'read -P 0 1M 64k',
            uri,
          ]);
          assert.doesNotMatch(back, /Pattern verification failed/);
        } finally {
          assert.equal(await s.stop(), 0);
        }
        assert.deepEqual(await fileState(file), before);
        // The overlay is gone with the server.
        if (server === 'vdisk') assert.deepEqual(await readdir(tmp), []);
      });
    });
  }

  it('the original stays closed to writers only while served; a bad image fails before listening', async (t) => {
    if (!need(t)) return;
    await withTempDir(async (dir) => {
      const tmp = path.join(dir, 'tmp');
      await mkdir(tmp);
      const r = await vdisk(['serve', '-s', '-k', path.join(dir, 's.sock'), path.join(dir, 'missing.qcow2')], {
        env: { ...process.env, TMPDIR: tmp },
      });
      assert.equal(r.code, 1);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.deepEqual(await readdir(tmp), []);
    });
  });
});

describe('serve --object tls-creds-x509 and --tls-creds ID, as qemu-nbd', {
  skip: !HAVE && 'QEMU tools not installed',
}, () => {
  it('serves over TLS with the object named, and prints an nbds:// URI', async (t) => {
    if (!need(t, 'openssl')) return;
    await withTempDir(async (dir) => {
      const creds = await makeCertificates(dir);
      const file = await image(dir);
      const port = await freePort();
      const object = `tls-creds-x509,id=tls0,dir=${creds.server},endpoint=server`;
      const s = await startVdiskServe([
        '--object',
        object,
        '--tls-creds',
        'tls0',
        '-t',
        '-b',
        '127.0.0.1',
        '-p',
        String(port),
        '-f',
        'qcow2',
        file,
      ]);
      try {
        assert.equal(s.uri, `nbds://127.0.0.1:${port}/`);
        const uri = `${s.uri}?tls-certificates=${creds.client}`;
        assert.match(await ok('nbdinfo', ['--list', uri]), /newstyle-fixed with TLS/);
        const client = `tls-creds-x509,id=c0,dir=${creds.client},endpoint=client`;
        const opts = `driver=nbd,host=127.0.0.1,port=${port},tls-creds=c0`;
        await ok('qemu-io', ['--object', client, '--image-opts', opts, '-c', 'write -P 0x3c 2M 64k']);
        const back = await ok('qemu-io', ['--object', client, '--image-opts', opts, '-c', 'read -P 0x3c 2M 64k']);
        assert.doesNotMatch(back, /Pattern verification failed/);
        const plain = await run('nbdinfo', [`nbd://127.0.0.1:${port}/`]);
        assert.notEqual(plain.code, 0);
      } finally {
        assert.equal(await s.stop(), 0, s.output().stderr);
      }
      const read = await ok('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x3c 2M 64k', file]);
      assert.doesNotMatch(read, /Pattern verification failed/);
    });
  });

  it('refuses what qemu-nbd refuses, with one line, before listening', async (t) => {
    if (!need(t, 'openssl')) return;
    await withTempDir(async (dir) => {
      const creds = await makeCertificates(dir);
      const file = await image(dir);
      const before = await fileState(file);
      const server = `tls-creds-x509,id=tls0,dir=${creds.server},endpoint=server`;
      const cases: Array<[string[], RegExp]> = [
        [
          ['--object', server, '--tls-creds', 'other'],
          /^vdisk: Failed to get TLS creds: No TLS credentials with id 'other'$/,
        ],
        [
          ['--object', `tls-creds-x509,id=tls0,dir=${creds.client},endpoint=client`, '--tls-creds', 'tls0'],
          /^vdisk: Expecting TLS credentials with a server endpoint$/,
        ],
        [['--object', 'frobnicator,id=x'], /^vdisk: Parameter 'qom-type' does not accept value 'frobnicator'$/],
        [['--object', `tls-creds-x509,dir=${creds.server},endpoint=server`], /^vdisk: Parameter 'id' is missing$/],
        [
          [
            '--object',
            `tls-creds-x509,id=tls0,dir=${path.join(dir, 'nowhere')},endpoint=server`,
            '--tls-creds',
            'tls0',
          ],
          /^vdisk: Unable to access credentials .*nowhere\/ca-cert\.pem/,
        ],
      ];
      for (const [args, message] of cases) {
        const socket = path.join(dir, 's.sock');
        const q = await run('qemu-nbd', [...args, '-k', socket, '-f', 'qcow2', file]);
        const v = await vdisk(['serve', ...args, '-k', socket, '-f', 'qcow2', file]);
        assert.equal(q.code, 1, `qemu-nbd ${args.join(' ')}: ${q.stderr}`);
        assert.equal(v.code, 1, args.join(' '));
        assert.equal(lines(v.stderr).length, 1, v.stderr);
        assert.match(v.stderr.trimEnd(), message);
        assert.ok(!existsSync(socket));
      }
      assert.deepEqual(await fileState(file), before);
    });
  });
});
