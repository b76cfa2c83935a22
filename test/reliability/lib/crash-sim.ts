/**
 * The power-loss simulator: runs a guest workload on an image over a RecordingDriver, then
 * builds the crash states of its log (crash-states.ts) and checks each one:
 *
 * 1. the image opens (a dirty image with lazy refcounts is repaired on open);
 * 2. vdisk's check (checkQcow2) finds no corruption and no check error (leaks are allowed);
 * 3. on a sample, qemu-img check agrees (no corruption, the same leak count);
 * 4. every sector holds what the guest model allows (guest.ts): acknowledged-and-flushed data
 *    (every acknowledged write in writethrough and directsync) reads back, and nothing reads as
 *    another sector's data or metadata.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BlockBackend } from '../../../src/block/backend.js';
import { type CacheModeName, cacheMode } from '../../../src/block/cache-mode.js';
import type { BlockDriver } from '../../../src/block/driver.js';
import type { Preallocation } from '../../../src/block/preallocation.js';
import { formatDefinition } from '../../../src/engine/formats.js';
import { checkQcow2 } from '../../../src/format/qcow2/check/check.js';
import { RawDriver } from '../../../src/format/raw/driver.js';
import { createImage } from '../../../src/tools/create.js';
import { hasCommand, run } from '../../helpers/run.js';
import { config, FAILURE_DIR, rng } from './config.js';
import { type CrashState, StateBuilder, statesOf, windowsOf } from './crash-states.js';
import { FlatDriver } from './flat-driver.js';
import { Guest, GuestModel, type GuestPolicy, SECTOR, sectorPattern } from './guest.js';
import { RecordingDriver } from './recording-driver.js';

export interface CrashWorkload {
  name: string;
  format: 'qcow2' | 'raw';
  size: number;
  /** qcow2 create options (cluster_size, refcount_bits, lazy_refcounts, compat, preallocation …). */
  options?: Record<string, string | number | boolean>;
  /** A raw backing file of this size, each sector holding a recognisable pattern. */
  backing?: { size: number };
  /**
   * For the bounded run of `npm test`: the share of the state budget this (expensive) workload
   * gets, and the cache modes it runs in (default: writeback, writethrough and one more).
   */
  ci?: { weight: number; modes?: ('writeback' | 'writethrough' | 'none' | 'directsync' | 'unsafe')[] };
  /** Unrecorded preparation, run once per workload (its closed result is every run's durable start). */
  setup?: (g: Guest, random: () => number) => Promise<void>;
  /** The recorded workload. */
  run: (g: Guest, random: () => number) => Promise<void>;
}

export interface CrashRunOptions {
  cache: CacheModeName;
  seed: number;
  /** Completion jitter (concurrent requests complete out of order). */
  jitter?: boolean;
  /** Crash states per run at most (default: config; 0: every state). */
  statesCap?: number;
}

export interface CrashRunReport {
  label: string;
  hostOps: number;
  flushes: number;
  windows: number;
  states: number;
  unique: number;
  qemuChecked: number;
  leakyStates: number;
  failures: string[];
  ms: number;
}

const BACKING_NAME = 'backing.raw';
const IMAGE_NAME = 'image.qcow2';
const templates = new Map<string, Promise<{ image: Buffer; backing?: Buffer }>>();

/** The image as created (by vdisk's create), and its backing file's bytes. */
export function template(w: CrashWorkload): Promise<{ image: Buffer; backing?: Buffer }> {
  const key = JSON.stringify([w.format, w.size, w.options, w.backing]);
  let t = templates.get(key);
  if (!t) {
    t = (async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-crash-'));
      try {
        let backing: Buffer | undefined;
        const options: Record<string, string | number | boolean> = { ...w.options };
        if (w.backing) {
          backing = Buffer.alloc(w.backing.size);
          for (let s = 0; s < w.backing.size / SECTOR; s++) {
            sectorPattern(0xbac, s, backing.subarray(s * SECTOR, (s + 1) * SECTOR));
          }
          await writeFile(path.join(dir, BACKING_NAME), backing);
          options.backing_file = BACKING_NAME;
          options.backing_fmt = 'raw';
        }
        const file = path.join(dir, IMAGE_NAME);
        if (w.format === 'raw') {
          await writeFile(file, Buffer.alloc(w.size));
        } else {
          await createImage({ filename: file, format: 'qcow2', size: w.size, options });
        }
        let image = await readFile(file);
        if (w.setup) {
          // The setup runs once per workload; its result, closed cleanly, is every run's start.
          const flat = new FlatDriver(image, { name: IMAGE_NAME });
          const driver = await openFormat(w, flat, 'writeback', backing);
          const backend = new BlockBackend(driver, { writeCache: true });
          const policy = { writeCache: true, noFlush: false, discardReadsInitial: false, clusterSize: 512 };
          let clock = 0;
          await w.setup(new Guest(backend, { tick: () => ++clock }, policy), rng(1));
          await backend.close();
          image = Buffer.from(flat.bytes());
        }
        return { image, backing };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    })();
    templates.set(key, t);
  }
  return t;
}

export async function openFormat(
  w: CrashWorkload,
  file: BlockDriver,
  cache: CacheModeName,
  backing: Buffer | undefined,
): Promise<BlockDriver> {
  const backingDriver = backing ? new RawDriver(new FlatDriver(backing, { readOnly: true, copy: false })) : undefined;
  return formatDefinition(w.format).open(file, {
    filename: IMAGE_NAME,
    cache: cacheMode(cache),
    readOnly: false,
    openBacking: async () => {
      if (!backingDriver) throw new Error('no backing file in this test');
      return backingDriver;
    },
  });
}

export interface Examined {
  problems: string[];
  content?: Buffer;
  leaks: number;
  /** The bytes after opening (a dirty image was repaired), for qemu-img check. */
  bytes: Buffer;
}

export async function examine(
  w: CrashWorkload,
  file: FlatDriver,
  cache: CacheModeName,
  backing?: Buffer,
): Promise<Examined> {
  let image: BlockDriver;
  try {
    image = await openFormat(w, file, cache, backing);
  } catch (err) {
    return { problems: [`the image does not open: ${(err as Error).message}`], leaks: 0, bytes: file.bytes() };
  }
  const problems: string[] = [];
  let leaks = 0;
  if (w.format === 'qcow2') {
    const result = await checkQcow2(file);
    leaks = result.leaks;
    if (result.failure !== undefined) problems.push(`vdisk check failed: ${result.failure}`);
    if (result.corruptions > 0 || result.checkErrors > 0) {
      problems.push(
        `vdisk check: ${result.corruptions} corruptions, ${result.checkErrors} check errors: ` +
          result.messages.slice(0, 4).join(' | '),
      );
    }
  }
  const content = Buffer.allocUnsafe(image.length());
  try {
    for (let pos = 0; pos < content.length; pos += 1 << 20) {
      await image.read(pos, content.subarray(pos, Math.min(content.length, pos + (1 << 20))));
    }
  } catch (err) {
    problems.push(`reading the guest content failed: ${(err as Error).message}`);
    return { problems, leaks, bytes: file.bytes() };
  }
  return { problems, content, leaks, bytes: file.bytes() };
}

/** qemu-img check of a state's bytes: null when consistent with vdisk, else the difference. */
async function qemuCheck(dir: string, bytes: Buffer, vdiskLeaks: number): Promise<string | null> {
  const file = path.join(dir, IMAGE_NAME);
  await writeFile(file, bytes);
  const r = await run('qemu-img', ['check', '-f', 'qcow2', '--output=json', file]);
  let report: { corruptions?: number; leaks?: number; 'check-errors'?: number };
  try {
    report = JSON.parse(r.stdout);
  } catch {
    return `qemu-img check exited ${r.code}: ${r.stderr.trim().split('\n')[0]}`;
  }
  const corruptions = report.corruptions ?? 0;
  const leaks = report.leaks ?? 0;
  const errors = report['check-errors'] ?? 0;
  if (corruptions > 0 || errors > 0) return `qemu-img check: ${corruptions} corruptions, ${errors} check errors`;
  if (leaks !== vdiskLeaks) return `qemu-img check counts ${leaks} leaked clusters, vdisk check ${vdiskLeaks}`;
  return null;
}

function pick<T>(items: T[], count: number, random: () => number, headFirst: number): T[] {
  if (items.length <= count) return items;
  const head = items.slice(0, Math.min(headFirst, count));
  const rest = items.slice(head.length);
  for (let i = rest.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [rest[i], rest[j]] = [rest[j]!, rest[i]!];
  }
  return [...head, ...rest.slice(0, count - head.length)];
}

export async function runCrashWorkload(w: CrashWorkload, o: CrashRunOptions): Promise<CrashRunReport> {
  const started = Date.now();
  const mode = cacheMode(o.cache);
  const prealloc = (w.options?.preallocation as Preallocation | undefined) ?? 'off';
  const label = `${w.name} cache=${o.cache}${w.format === 'qcow2' ? ` preallocation=${prealloc}` : ''} seed=${o.seed}`;
  const random = rng(o.seed);
  const t = await template(w);
  const rec = new RecordingDriver(t.image, {
    name: IMAGE_NAME,
    noFlush: mode.noFlush,
    jitter: o.jitter ? () => (random() < 0.5 ? 0 : Math.floor(random() * 4)) : undefined,
  });
  const image = await openFormat(w, rec, o.cache, t.backing);
  const backend = new BlockBackend(image, { writeCache: mode.writeCache });
  const clusterSize = image.describe?.().clusterSize ?? 65536;
  const policy: GuestPolicy = {
    writeCache: mode.writeCache,
    noFlush: mode.noFlush,
    discardReadsInitial: w.options?.compat === '0.10' && w.backing !== undefined,
    clusterSize,
  };
  const guest = new Guest(backend, rec, policy);
  const initial = await backend.read(0, backend.length);
  rec.startRecording();
  guest.recording = true;
  await w.run(guest, random);
  guest.settle();
  const model = new GuestModel(initial, guest.ops, policy);

  const windows = windowsOf(rec.log, rec.now);
  const builder = new StateBuilder(rec.base, rec.log);
  const cap = o.statesCap ?? config.crashStatesPerRun;
  const active = windows.filter((win) => win.volatile.length > 0 || win.index === 0);
  let chosen = new Set(active.map((win) => win.index));
  if (cap > 0 && active.length * 3 > cap) {
    chosen = new Set(pick(active, Math.max(1, Math.floor(cap / 3)), random, 0).map((win) => win.index));
  }
  const perWindow = cap > 0 ? Math.max(3, Math.floor(cap / Math.max(1, chosen.size))) : Number.POSITIVE_INFINITY;

  const report: CrashRunReport = {
    label,
    hostOps: rec.log.length,
    flushes: rec.log.filter((op) => op.kind === 'flush').length,
    windows: windows.length,
    states: 0,
    unique: 0,
    qemuChecked: 0,
    leakyStates: 0,
    failures: [],
    ms: 0,
  };
  const qemu = w.format === 'qcow2' && config.crashQemuSample > 0 && hasCommand('qemu-img');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-crash-'));
  if (t.backing) await writeFile(path.join(dir, BACKING_NAME), t.backing);
  let qemuBudget = config.crashQemuSample;
  try {
    for (const win of windows) {
      builder.enter(win);
      if (!chosen.has(win.index)) continue;
      const { main, torn } = statesOf(rec.log, win, {
        randomSubsets: config.crashRandomSubsets,
        tornPerWrite: config.crashTornPerWrite,
        processCrashOnly: mode.noFlush,
        random,
      });
      const tornShare = Math.min(torn.length, Math.floor(perWindow * 0.4));
      const selected = [
        ...pick(main, perWindow - tornShare, random, Math.ceil(perWindow * 0.4)),
        ...pick(torn, tornShare, random, 0),
      ];
      const seen = new Map<string, Examined>();
      for (const state of selected) {
        if (report.failures.length >= 5) break;
        const file = builder.build(state);
        const key = createHash('sha1').update(file.bytes()).digest('hex');
        report.states++;
        let ex = seen.get(key);
        if (!ex) {
          ex = await examine(w, file, o.cache, t.backing);
          seen.set(key, ex);
          report.unique++;
          if (ex.leaks > 0) report.leakyStates++;
          // The qemu-img sample: leaky states and later windows are the interesting ones.
          if (qemu && qemuBudget > 0 && ex.problems.length === 0 && (ex.leaks > 0 || random() < 0.05)) {
            qemuBudget--;
            report.qemuChecked++;
            const diff = await qemuCheck(dir, ex.bytes, ex.leaks);
            if (diff) ex.problems.push(diff);
          }
        }
        const problems = [...ex.problems];
        if (ex.content) problems.push(...model.check(ex.content, state.earliest, state.latest));
        if (problems.length > 0) report.failures.push(await describeFailure(label, rec, state, problems, file));
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  report.ms = Date.now() - started;
  return report;
}

let saved = 0;

async function describeFailure(
  label: string,
  rec: RecordingDriver,
  state: CrashState,
  problems: string[],
  file: FlatDriver,
): Promise<string> {
  const ops = state.applied
    .map((a) => {
      const op = rec.log[a.index]!;
      const what =
        op.kind === 'write'
          ? `${op.data ? 'write' : op.punch ? 'discard' : 'zero'} ${op.offset}+${op.length}`
          : op.kind === 'truncate'
            ? `truncate ${op.length}`
            : 'flush';
      return `#${a.index} ${what}${a.torn ? ` torn@${a.torn} (${a.pieces!.length} pieces)` : ''}`;
    })
    .join(', ');
  let where = '';
  if (saved < 20) {
    saved++;
    await mkdir(FAILURE_DIR, { recursive: true });
    where = path.join(FAILURE_DIR, `crash-${process.pid}-${saved}.qcow2`);
    await writeFile(where, file.bytes());
  }
  return (
    `${label}: window ${state.window}, ${state.how}, crash between t=${state.earliest} and t=${state.latest}; ` +
    `volatile ops applied: [${ops}]\n    ${problems.join('\n    ')}` +
    (where ? `\n    state saved as ${where}` : '')
  );
}

/** Prints the host log of a run around a clock value (for debugging a failure by hand). */
export function formatLog(rec: RecordingDriver): string {
  return rec.log
    .map((op, i) => {
      const t = `[${op.start}..${op.end}]`;
      if (op.kind === 'flush') return `${i} ${t} flush`;
      if (op.kind === 'truncate') return `${i} ${t} truncate ${op.length}`;
      return `${i} ${t} ${op.data ? 'write' : op.punch ? 'discard' : 'zero'} ${op.offset}+${op.length}`;
    })
    .join('\n');
}
