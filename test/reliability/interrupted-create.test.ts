/**
 * create and convert that cannot finish leave either no file or the old one, never a half-made
 * image that looks fine:
 *
 * - disk full: on a small tmpfs with 16 to 128 KiB free, every preallocation mode of create and
 *   convert fails, and the directory holds exactly what it held before (an old image at the
 *   target name byte for byte);
 * - killed: `vdisk create -o preallocation=full` and `vdisk convert` under SIGKILL at random
 *   moments leave no file or the old one, or a complete image that qemu-img check passes, and
 *   no temporary file;
 * - power loss: traced with strace, every write to the new image is synced before it gets its
 *   name, and the directory is synced after, so no crash can name an incomplete image.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { hasCommand, run, VDISK_MAIN, vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';
import { config, LEVEL, rng } from './lib/config.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const haveQemu = hasCommand('qemu-img') && hasCommand('qemu-io');

/** Mounts a tmpfs of `bytes` at `dir` for `fn`, or says why it cannot. */
async function withSmallFs<T>(dir: string, bytes: number, fn: () => Promise<T>): Promise<T> {
  await mkdir(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
  try {
    return await fn();
  } finally {
    spawnSync('umount', ['-l', dir]);
  }
}

/** Why a small tmpfs cannot be mounted here, or false when it can (tried once). */
function canMount(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to mount a small tmpfs (CI runs as root)';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vdisk-mount-'));
  try {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { encoding: 'utf8' });
    if (r.status !== 0) return `cannot mount a tmpfs here: ${(r.stderr || r.error?.message || '').trim()}`;
    spawnSync('umount', [dir]);
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Fills `dir` until `free` bytes remain (tmpfs counts whole pages). */
async function leaveFree(dir: string, free: number): Promise<void> {
  const st = spawnSync('df', ['-B1', '--output=avail', dir], { encoding: 'utf8' });
  const avail = Number(st.stdout.trim().split('\n').pop());
  await writeFile(path.join(dir, 'filler'), Buffer.alloc(Math.max(0, avail - free)));
}

async function listing(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) out[name] = (await fileState(path.join(dir, name))).sha256 ?? '';
  return out;
}

interface FullCase {
  name: string;
  args: (target: string, source: string) => string[];
}

const FULL_CASES: FullCase[] = [
  {
    name: 'create qcow2 metadata 4k clusters',
    args: (t) => ['create', '-f', 'qcow2', '-o', 'preallocation=metadata,cluster_size=4k', t, '64M'],
  },
  { name: 'create qcow2 falloc', args: (t) => ['create', '-f', 'qcow2', '-o', 'preallocation=falloc', t, '64M'] },
  { name: 'create qcow2 full', args: (t) => ['create', '-f', 'qcow2', '-o', 'preallocation=full', t, '64M'] },
  { name: 'create raw falloc', args: (t) => ['create', '-f', 'raw', '-o', 'preallocation=falloc', t, '16M'] },
  { name: 'create raw full', args: (t) => ['create', '-f', 'raw', '-o', 'preallocation=full', t, '16M'] },
  {
    name: 'convert to qcow2 metadata 4k clusters',
    args: (t, s) => ['convert', '-O', 'qcow2', '-o', 'preallocation=metadata,cluster_size=4k', s, t],
  },
  { name: 'convert to raw', args: (t, s) => ['convert', '-O', 'raw', s, t] },
];

describe(`create and convert that cannot finish (${LEVEL})`, () => {
  it('disk full: nothing is left, or the old image byte for byte', { skip: canMount() }, async (t) => {
    await withTempDir(async (dir) => {
      // The convert source lives outside the small filesystem: 8 MiB of data in a 64 MiB image.
      const source = path.join(dir, 'source.qcow2');
      assert.equal((await vdisk(['create', '-f', 'qcow2', source, '64M'])).code, 0);
      const w = await vdisk(['io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 4M', '-c', 'write -P 0xa5 32M 4M', source]);
      assert.equal(w.code, 0, w.stderr);
      const oldImage = path.join(dir, 'old.qcow2');
      assert.equal((await vdisk(['create', '-f', 'qcow2', oldImage, '1M'])).code, 0);
      assert.equal((await vdisk(['io', '-f', 'qcow2', '-c', 'write -P 0x77 0 64k', oldImage])).code, 0);

      const small = path.join(dir, 'small');
      const problems: string[] = [];
      let cases = 0;
      for (const free of [16 * KiB, 64 * KiB, 128 * KiB]) {
        for (const c of FULL_CASES) {
          for (const existing of [false, true]) {
            cases++;
            const label = `${c.name}, ${free / KiB} KiB free, ${existing ? 'over an old image' : 'new name'}`;
            await withSmallFs(small, 4 * MiB, async () => {
              const target = path.join(small, 'target.img');
              if (existing) await writeFile(target, await readFile(oldImage));
              await leaveFree(small, free);
              const before = await listing(small);
              const r = await vdisk(c.args(target, source));
              if (r.code === 0) problems.push(`${label}: succeeded with ${free} bytes free`);
              else if (!/No space left on device/.test(r.stderr)) problems.push(`${label}: ${r.stderr.trim()}`);
              const after = await listing(small);
              if (JSON.stringify(after) !== JSON.stringify(before)) {
                problems.push(`${label}: the directory changed: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
              }
            });
            await rm(small, { recursive: true, force: true });
          }
        }
      }
      t.diagnostic(`${cases} disk-full cases`);
      console.log(`[reliability] disk full during create/convert: ${cases} cases, ${problems.length} problems`);
      assert.deepEqual(problems, [], problems.join('\n'));
    });
  });

  it('killed: no file, the old file, or a complete image; never a temporary file', {
    skip: !haveQemu && 'qemu-img not installed',
  }, async (t) => {
    await withTempDir(async (dir) => {
      const source = path.join(dir, 'source.qcow2');
      assert.equal((await vdisk(['create', '-f', 'qcow2', source, '128M'])).code, 0);
      const w = await vdisk(['io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 16M', '-c', 'write -P 0xa5 64M 16M', source]);
      assert.equal(w.code, 0, w.stderr);
      const oldImage = path.join(dir, 'old.qcow2');
      assert.equal((await vdisk(['create', '-f', 'qcow2', oldImage, '1M'])).code, 0);
      const oldBytes = await readFile(oldImage);

      const commands: { name: string; format: string; args: (t: string) => string[] }[] = [
        {
          name: 'create raw full',
          format: 'raw',
          args: (t) => ['create', '-f', 'raw', '-o', 'preallocation=full', t, '128M'],
        },
        {
          name: 'create qcow2 full',
          format: 'qcow2',
          args: (t) => ['create', '-f', 'qcow2', '-o', 'preallocation=full', t, '128M'],
        },
        { name: 'convert to qcow2', format: 'qcow2', args: (t) => ['convert', '-O', 'qcow2', source, t] },
        { name: 'convert to raw', format: 'raw', args: (t) => ['convert', '-O', 'raw', '-S', '0', source, t] },
      ];
      // Each command's uninterrupted time, so kills land anywhere in it and some land after.
      const durations: number[] = [];
      for (const c of commands) {
        const target = path.join(dir, 'timing.img');
        const started = Date.now();
        const r = await vdisk(c.args(target));
        assert.equal(r.code, 0, `${c.name}: ${r.stderr}`);
        durations.push(Date.now() - started);
        await rm(target);
      }
      const random = rng(config.seed);
      const kills = Math.max(commands.length * 2, Math.round(config.kills / 8));
      const outcomes = { nothing: 0, old: 0, complete: 0 };
      const problems: string[] = [];
      for (let i = 0; i < kills; i++) {
        const c = commands[i % commands.length]!;
        const existing = i % (2 * commands.length) >= commands.length;
        const work = path.join(dir, `k${i}`);
        await mkdir(work);
        const target = path.join(work, 'target.img');
        if (existing) await writeFile(target, oldBytes);
        const delay = Math.floor(random() * 1.2 * durations[i % commands.length]!);
        const child: ChildProcess = spawn(process.execPath, [VDISK_MAIN, ...c.args(target)], { stdio: 'ignore' });
        const exited = new Promise((r) => child.once('exit', r));
        await Promise.race([exited, new Promise((r) => setTimeout(r, delay))]);
        child.kill('SIGKILL');
        await exited;
        const label = `${c.name}${existing ? ' over an old image' : ''}, killed after ${delay} ms`;
        const names = await readdir(work);
        if (names.some((n) => n !== 'target.img')) problems.push(`${label}: left ${names.join(', ')}`);
        if (!names.includes('target.img')) {
          if (existing) problems.push(`${label}: the old image is gone`);
          outcomes.nothing++;
        } else if ((await readFile(target)).equals(oldBytes)) {
          outcomes.old++;
        } else {
          const info = JSON.parse((await run('qemu-img', ['info', '--output=json', target])).stdout || '{}');
          if (info.format !== c.format || info['virtual-size'] !== 128 * MiB) {
            problems.push(`${label}: an incomplete image: ${JSON.stringify(info).slice(0, 200)}`);
          } else if (c.format === 'qcow2') {
            const check = await run('qemu-img', ['check', target]);
            if (check.code !== 0) problems.push(`${label}: qemu-img check: ${check.stdout}${check.stderr}`);
          }
          if (c.name.startsWith('convert')) {
            const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', c.format, source, target]);
            if (cmp.code !== 0) problems.push(`${label}: the converted image differs: ${cmp.stdout}`);
          }
          outcomes.complete++;
        }
        await rm(work, { recursive: true, force: true });
      }
      t.diagnostic(`${kills} kills: ${JSON.stringify(outcomes)}`);
      console.log(
        `[reliability] killed create/convert: ${kills} kills ${JSON.stringify(outcomes)}, ${problems.length} problems`,
      );
      assert.deepEqual(problems, [], problems.join('\n'));
    });
  });

  it('power loss: the new image is durable before it is named, and the name after', {
    skip: !hasCommand('strace') && 'strace not installed',
  }, async (t) => {
    await withTempDir(async (dir) => {
      const source = path.join(dir, 'source.qcow2');
      assert.equal((await vdisk(['create', '-f', 'qcow2', source, '8M'])).code, 0);
      assert.equal((await vdisk(['io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', source])).code, 0);
      const cases: { name: string; args: (t: string) => string[]; existing: boolean }[] = [
        {
          name: 'create qcow2 metadata',
          args: (x) => ['create', '-f', 'qcow2', '-o', 'preallocation=metadata', x, '8M'],
          existing: false,
        },
        {
          name: 'create raw full over an old file',
          args: (x) => ['create', '-f', 'raw', '-o', 'preallocation=full', x, '8M'],
          existing: true,
        },
        { name: 'convert to qcow2', args: (x) => ['convert', '-O', 'qcow2', source, x], existing: false },
        { name: 'convert to raw over an old file', args: (x) => ['convert', '-O', 'raw', source, x], existing: true },
      ];
      const problems: string[] = [];
      for (const c of cases) {
        const target = path.join(dir, 'target.img');
        await rm(target, { force: true });
        if (c.existing) await writeFile(target, Buffer.alloc(4096, 1));
        const trace = path.join(dir, 'trace.txt');
        const syscalls =
          'openat,close,pwrite64,write,pwritev,fallocate,ftruncate,fsync,fdatasync,linkat,rename,renameat,renameat2';
        const r = await run('strace', [
          '-f',
          '-qq',
          '-e',
          `trace=${syscalls}`,
          '-o',
          trace,
          process.execPath,
          VDISK_MAIN,
          ...c.args(target),
        ]);
        if (r.code !== 0 && /ptrace|Operation not permitted/.test(r.stderr))
          return t.skip(`strace cannot trace here: ${r.stderr.trim()}`);
        assert.equal(r.code, 0, `${c.name}: ${r.stderr}`);
        for (const p of orderingProblems(await readFile(trace, 'utf8'), target)) problems.push(`${c.name}: ${p}`);
      }
      assert.deepEqual(problems, [], problems.join('\n'));
    });
  });
});

/**
 * Reads an strace log of one create/convert and says what a power loss could break: a write
 * to the new image not synced when it is named, or a name never made durable by a directory sync.
 */
/**
 * strace's lines, with each call another thread interrupted ("openat(… <unfinished ...>", then
 * "<... openat resumed>) = 18") put back together where it completed, so that a busy machine
 * does not hide a call from the check.
 */
function joinResumed(log: string): string[] {
  const unfinished = new Map<string, string>();
  const lines: string[] = [];
  for (const line of log.split('\n')) {
    const start = /^(\d+)\s+(.*) <unfinished \.\.\.>$/.exec(line);
    if (start) {
      unfinished.set(start[1]!, start[2]!);
      continue;
    }
    const end = /^(\d+)\s+<\.\.\. \w+ resumed>(.*)$/.exec(line);
    const head = end ? unfinished.get(end[1]!) : undefined;
    if (end && head !== undefined) {
      unfinished.delete(end[1]!);
      lines.push(`${end[1]} ${head}${end[2]}`);
    } else lines.push(line);
  }
  return lines;
}

function orderingProblems(log: string, target: string): string[] {
  const problems: string[] = [];
  const fds = new Map<number, 'image' | 'dir'>();
  const pendingSync = new Map<string, number>();
  let dirty = false;
  let named = false;
  let dirSynced = false;
  let stagedPath: string | undefined;
  for (const line of joinResumed(log)) {
    const m = /^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\((.*))$/.exec(line);
    if (!m) continue;
    const [, pid, resumed, call, rest = ''] = m;
    const result = /= (-?\d+)/.exec(line)?.[1];
    if (resumed) {
      if ((resumed === 'fsync' || resumed === 'fdatasync') && result === '0') {
        const fd = pendingSync.get(pid!);
        if (fds.get(fd!) === 'image') dirty = false;
        if (fds.get(fd!) === 'dir' && named) dirSynced = true;
      } else if (resumed === 'openat' && result !== undefined && Number(result) >= 0) {
        // Handled below only for complete lines; a resumed open of the image is rare enough to
        // be treated as unknown (never silently clean).
      }
      continue;
    }
    const fd = Number(/^(-?\d+)/.exec(rest)?.[1]);
    switch (call) {
      case 'openat': {
        const opened = Number(result);
        const file = /"([^"]*)"/.exec(rest)?.[1] ?? '';
        if (!(opened >= 0)) break;
        if (/O_TMPFILE/.test(rest)) {
          fds.set(opened, 'image');
          stagedPath = `/proc/self/fd/${opened}`;
        } else if (stagedPath !== undefined && file === stagedPath) fds.set(opened, 'image');
        else if (named && (file === path.dirname(target) || file === '.')) fds.set(opened, 'dir');
        else fds.delete(opened);
        break;
      }
      case 'close':
        fds.delete(fd);
        break;
      case 'pwrite64':
      case 'pwritev':
      case 'write':
      case 'fallocate':
      case 'ftruncate':
        if (fds.get(fd) === 'image') dirty = true;
        break;
      case 'fsync':
      case 'fdatasync':
        if (result === '0') {
          if (fds.get(fd) === 'image') dirty = false;
          if (fds.get(fd) === 'dir' && named) dirSynced = true;
        } else pendingSync.set(pid!, fd);
        break;
      case 'linkat':
      case 'rename':
      case 'renameat':
      case 'renameat2':
        if (rest.includes(`"${target}"`) && result === '0') {
          if (dirty) problems.push(`${call} named the image with writes not yet synced`);
          named = true;
        }
        break;
    }
  }
  if (stagedPath === undefined) problems.push('the image was not built in an O_TMPFILE inode');
  if (!named) problems.push('the image was never given its name');
  if (!dirSynced) problems.push('the directory was not synced after the image was named');
  return problems;
}
