/**
 * Killed processes: `vdisk serve` under a client's write/flush workload, killed with SIGKILL at
 * a random moment, restarted on the same image, and judged:
 *
 * - the restarted server opens the image (a dirty lazy-refcount image is repaired on open);
 * - every request answered before the kill that was promised durable reads back through the
 *   restarted server, and every other sector holds its old content or something written to it
 *   (GuestModel; a killed process loses no page cache, so in every cache mode a request is
 *   durable once it was answered with FUA or no write cache, or a later answered flush covers it;
 *   a raw image has no metadata to lose, so every answered write is there);
 * - qcow2: `vdisk check` (in process) and `qemu-img check` find no corruption, and agree on the
 *   leaks.
 *
 * Then the next round's workload runs on the restarted server. The client is vdisk's test
 * client over the NBD wire (many requests in flight, every sector's data recognisable) or
 * qemu-io (a real QEMU client: sequential patterned writes, zero writes and flushes).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { CacheModeName } from '../../../src/block/cache-mode.js';
import { checkImage } from '../../../src/tools/check.js';
import { createImage } from '../../../src/tools/create.js';
import { type ServerProcess, startVdiskServe } from '../../helpers/nbd-serve.js';
import { run as runAsync } from '../../helpers/run.js';
import { rng } from './config.js';
import { GuestModel, type GuestOp, SECTOR, settleOps } from './guest.js';
import { ErrorReply, NbdGuest } from './nbd-guest.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** Trims and zero writes are whole 64 KiB units: whole clusters in every configuration here. */
const UNIT = 64 * 1024;

export interface KillConfig {
  name: string;
  format: 'raw' | 'qcow2';
  cache: CacheModeName;
  /** `-o` options for the image. */
  options?: Record<string, string | number | boolean>;
  client: 'wire' | 'qemu-io';
}

export interface KillReport {
  label: string;
  kills: number;
  /** Requests the client sent, and how many were answered before the kill. */
  sent: number;
  answered: number;
  /** Answered flushes (the points durability is promised from). */
  flushes: number;
  /** States left with leaked clusters (allowed; counted). */
  leaky: number;
  qemuChecks: number;
  failures: string[];
  ms: number;
}

class Ticker {
  #t = 0;
  tick(): number {
    return ++this.#t;
  }
}

/** Runs `kills` kill-restart-verify rounds of one configuration in `dir`. */
export async function runKills(cfg: KillConfig, kills: number, seed: number, dir: string): Promise<KillReport> {
  const started = Date.now();
  const random = rng(seed);
  const image = path.join(dir, `${cfg.name}.img`);
  const socket = path.join(dir, `${cfg.name}.sock`);
  await createImage({ filename: image, format: cfg.format, size: SIZE, options: cfg.options ?? {} });
  const report: KillReport = {
    label: `${cfg.name} (${cfg.format}, cache=${cfg.cache}, client ${cfg.client})`,
    kills: 0,
    sent: 0,
    answered: 0,
    flushes: 0,
    leaky: 0,
    qemuChecks: 0,
    failures: [],
    ms: 0,
  };
  const args = ['-f', cfg.format, `--cache=${cfg.cache}`, '--discard=unmap', '-t', '-e', '0', '-k', socket, image];
  let content: Buffer = Buffer.alloc(SIZE);
  let previous: Previous | undefined;
  let nextId = 1;
  for (let round = 0; round <= kills && report.failures.length === 0; round++) {
    const where = `${report.label}, seed ${seed}, round ${round}`;
    let server: ServerProcess;
    try {
      server = await startVdiskServe(args);
    } catch (err) {
      report.failures.push(`${where}: the server did not restart: ${(err as Error).message}`);
      break;
    }
    try {
      const clock = new Ticker();
      const guest = await NbdGuest.connect(socket, clock, nextId);
      if (guest.size !== SIZE) throw new Error(`the export has ${guest.size} bytes, expected ${SIZE}`);
      content = await readAll(guest);
      if (previous) {
        const problems = previous.model.check(content, previous.from, previous.to);
        for (const p of problems) report.failures.push(`${where}: after the kill: ${p}`);
        if (problems.length > 0) report.failures.push(`${where}: ${history(previous, problems[0]!)}`);
        if (cfg.format === 'qcow2') await checkBoth(image, report, where);
      }
      if (round === kills) {
        guest.close();
        break;
      }
      const initial = content;
      let result: RoundResult;
      if (cfg.client === 'wire') {
        result = await wireRound(guest, clock, server, random);
        nextId = guest.nextId;
      } else {
        guest.close();
        result = await qemuIoRound(server, socket, random, nextId);
        nextId += result.ops.length + 1;
      }
      const { ops, from, to } = result;
      for (const p of result.problems) report.failures.push(`${where}: ${p}`);
      report.kills++;
      report.sent += ops.length;
      report.answered += ops.filter((o) => Number.isFinite(o.ack)).length;
      report.flushes += ops.filter((o) => o.kind === 'flush' && Number.isFinite(o.ack)).length;
      const writeCache =
        cfg.format === 'qcow2' && (cfg.cache === 'writeback' || cfg.cache === 'none' || cfg.cache === 'unsafe');
      settleOps(ops, { writeCache, noFlush: false });
      previous = {
        model: new GuestModel(initial, ops, {
          writeCache,
          noFlush: false,
          discardReadsInitial: false,
          clusterSize: UNIT,
        }),
        ops,
        from,
        to,
      };
    } catch (err) {
      report.failures.push(`${where}: ${(err as Error).stack ?? err}`);
    } finally {
      await server.stop('SIGKILL');
    }
  }
  report.ms = Date.now() - started;
  return report;
}

interface Previous {
  model: GuestModel;
  ops: GuestOp[];
  from: number;
  to: number;
}

/** The requests that touched the sector a problem names, for the failure message. */
function history(previous: Previous, problem: string): string {
  const sector = Number(/guest sector (\d+)/.exec(problem)?.[1] ?? -1);
  const at = sector * SECTOR;
  const touching = previous.ops.filter((o) => o.kind === 'flush' || (o.offset <= at && at < o.offset + o.length));
  const text = touching.map(
    (o) =>
      `${o.kind} #${o.id} ${o.kind === 'flush' ? '' : `${o.offset}+${o.length} `}${o.fua ? 'FUA ' : ''}` +
      `sent ${o.issue} answered ${o.ack} durable ${o.durableAt}`,
  );
  return `kill at ${previous.from}, process gone at ${previous.to}; requests on sector ${sector} and flushes: ${text.join('; ')}`;
}

async function readAll(guest: NbdGuest): Promise<Buffer> {
  const parts = await Promise.all(Array.from({ length: SIZE / MiB }, (_, i) => guest.read(i * MiB, MiB)));
  return Buffer.concat(parts);
}

/** vdisk check and qemu-img check of the state the kill left (after the restart's repair). */
async function checkBoth(image: string, report: KillReport, where: string): Promise<void> {
  const ours = await checkImage(image, { format: 'qcow2', forceShare: true });
  const c = ours.report;
  if (!c || ours.failure) {
    report.failures.push(`${where}: vdisk check failed: ${ours.failure}`);
    return;
  }
  if (c.corruptions > 0 || c.checkErrors > 0) {
    report.failures.push(`${where}: vdisk check: ${c.corruptions} corruptions, ${c.checkErrors} errors`);
  }
  const leaks = c.leaks;
  if (leaks > 0) report.leaky++;
  const r = await runAsync('qemu-img', ['check', '-U', '-f', 'qcow2', '--output=json', image]);
  report.qemuChecks++;
  let theirs: { corruptions?: number; leaks?: number; 'check-errors'?: number };
  try {
    theirs = JSON.parse(r.stdout);
  } catch {
    report.failures.push(`${where}: qemu-img check exited ${r.code}: ${r.stderr.trim()}`);
    return;
  }
  if ((theirs.corruptions ?? 0) > 0 || (theirs['check-errors'] ?? 0) > 0) {
    report.failures.push(`${where}: qemu-img check: ${theirs.corruptions ?? 0} corruptions`);
  }
  if ((theirs.leaks ?? 0) !== leaks) {
    report.failures.push(`${where}: qemu-img check counts ${theirs.leaks ?? 0} leaks, vdisk check ${leaks}`);
  }
}

interface RoundResult {
  ops: GuestOp[];
  /** The crash happened after tick `from` (the kill) and before tick `to` (the process was gone). */
  from: number;
  to: number;
  /** What went wrong before the kill (an error reply, output that does not match the script). */
  problems: string[];
}

/**
 * Random writes (some FUA), zero writes, trims and flushes with up to 8 in flight, none
 * overlapping another in flight (their order would be unspecified), until the server is killed:
 * after a random time, or right after a random request was sent.
 */
async function wireRound(
  guest: NbdGuest,
  clock: Ticker,
  server: ServerProcess,
  random: () => number,
): Promise<RoundResult> {
  const depth = 1 + Math.floor(random() * 8);
  const killAfterOps = random() < 0.5 ? 1 + Math.floor(random() * 300) : Number.POSITIVE_INFINITY;
  const killAfterMs = 1 + random() * 250;
  let killed = false;
  let from = 0;
  const kill = () => {
    if (killed) return;
    killed = true;
    from = clock.tick();
    server.proc.kill('SIGKILL');
  };
  const timer = setTimeout(kill, killAfterMs);
  const busy: Array<{ start: number; end: number }> = [];
  const inFlight = new Set<Promise<void>>();
  const problems: string[] = [];
  let sent = 0;
  try {
    while (!killed) {
      while (inFlight.size < depth && !killed) {
        const req = pick(random, busy);
        if (!req) break;
        const range = { start: req.offset, end: req.offset + req.length };
        if (req.kind !== 'flush') busy.push(range);
        const p = issue(guest, req)
          .catch((err: unknown) => {
            // Before the kill every request must succeed; after it, they fail with the connection.
            if (err instanceof ErrorReply && !killed)
              problems.push(`${req.kind} ${req.offset}+${req.length}: ${err.message}`);
          })
          .finally(() => {
            const at = busy.indexOf(range);
            if (at >= 0) busy.splice(at, 1);
            inFlight.delete(p);
          });
        inFlight.add(p);
        if (++sent >= killAfterOps) kill();
      }
      if (inFlight.size > 0) await Promise.race(inFlight);
      else await new Promise((r) => setImmediate(r));
    }
    await server.exited;
    const to = clock.tick();
    await Promise.allSettled(inFlight);
    return { ops: guest.ops, from, to, problems };
  } finally {
    clearTimeout(timer);
    guest.close();
  }
}

type Request =
  | { kind: 'write'; offset: number; length: number; fua: boolean }
  | { kind: 'zero'; offset: number; length: number; mayUnmap: boolean }
  | { kind: 'trim'; offset: number; length: number }
  | { kind: 'flush'; offset: 0; length: 0 };

function pick(random: () => number, busy: Array<{ start: number; end: number }>): Request | undefined {
  const r = random();
  if (r < 0.12) return { kind: 'flush', offset: 0, length: 0 };
  for (let attempt = 0; attempt < 8; attempt++) {
    let offset: number;
    let length: number;
    if (r < 0.78) {
      length = SECTOR * (1 + Math.floor(random() ** 2 * 256));
      offset = SECTOR * Math.floor(random() * ((SIZE - length) / SECTOR));
    } else {
      length = UNIT * (1 + Math.floor(random() * 3));
      offset = UNIT * Math.floor(random() * ((SIZE - length) / UNIT));
    }
    if (busy.some((b) => offset < b.end && b.start < offset + length)) continue;
    if (r < 0.7) return { kind: 'write', offset, length, fua: false };
    if (r < 0.78) return { kind: 'write', offset, length, fua: true };
    if (r < 0.9) return { kind: 'zero', offset, length, mayUnmap: random() < 0.5 };
    return { kind: 'trim', offset, length };
  }
  return undefined;
}

function issue(guest: NbdGuest, req: Request): Promise<void> {
  switch (req.kind) {
    case 'write':
      return guest.write(req.offset, req.length, req.fua);
    case 'zero':
      return guest.zero(req.offset, req.length, req.mayUnmap);
    case 'trim':
      return guest.trim(req.offset, req.length);
    case 'flush':
      return guest.flush();
  }
}

/**
 * qemu-io as the client: a script of patterned writes (some FUA), zero writes and flushes, each
 * flush followed by a small read whose output line marks the flush done. qemu-io runs them one
 * at a time, so the lines it printed say exactly which requests were answered; the first one
 * without a line may have reached the image, the rest were never sent.
 */
async function qemuIoRound(
  server: ServerProcess,
  socket: string,
  random: () => number,
  firstId: number,
): Promise<RoundResult> {
  const script: Array<{ cmd: string; op?: Omit<GuestOp, 'issue' | 'ack' | 'durableAt'> }> = [];
  let id = firstId;
  for (let i = 0; i < 400; i++) {
    const r = random();
    if (r < 0.12) {
      script.push({ cmd: 'flush', op: { id: id++, kind: 'flush', offset: 0, length: 0, fua: false } });
      script.push({ cmd: 'read 0 512' });
      continue;
    }
    const length = r < 0.85 ? SECTOR * (1 + Math.floor(random() ** 2 * 256)) : UNIT;
    const offset =
      r < 0.85
        ? SECTOR * Math.floor(random() * ((SIZE - length) / SECTOR))
        : UNIT * Math.floor(random() * (SIZE / UNIT));
    if (r < 0.85) {
      const pattern = 1 + (id % 254);
      const fua = r > 0.8;
      script.push({
        cmd: `write ${fua ? '-f ' : ''}-P ${pattern} ${offset} ${length}`,
        op: { id: id++, kind: 'write', offset, length, fua, data: Buffer.alloc(length, pattern) },
      });
    } else {
      const unmap = random() < 0.5;
      script.push({
        cmd: `write -z ${unmap ? '-u ' : ''}${offset} ${length}`,
        op: { id: id++, kind: 'zero', offset, length, fua: false },
      });
    }
  }
  const args = ['-f', 'raw', ...script.flatMap((s) => ['-c', s.cmd]), `nbd+unix:///?socket=${socket}`];
  const child = spawn('qemu-io', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.resume();
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  // qemu-io takes tens of milliseconds to start and connect on a loaded machine.
  const killAfterMs = 60 + random() * 300;
  await Promise.race([new Promise((r) => setTimeout(r, killAfterMs)), exited]);
  server.proc.kill('SIGKILL');
  await server.exited;
  const guard = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(guard);
  // Every command but a flush prints one line when answered, in script order; a flush is
  // answered when the marker read after it printed. The first command not answered may have
  // been sent; no later one was.
  const lines = stdout.split('\n').filter((l) => /^(wrote|read) \d+\/\d+ bytes/.test(l));
  const problems: string[] = [];
  const ops: GuestOp[] = [];
  let tick = 0;
  let line = 0;
  for (const s of script) {
    const answered = line < lines.length;
    if (answered && s.cmd !== 'flush') {
      const expected = s.op
        ? `${s.op.length}/${s.op.length} bytes at offset ${s.op.offset}`
        : '512/512 bytes at offset 0';
      if (!lines[line]!.includes(expected)) {
        problems.push(`qemu-io printed '${lines[line]}' for '${s.cmd}': a command failed before the kill`);
        break;
      }
      line++;
    }
    if (s.op) {
      ops.push({
        ...s.op,
        issue: ++tick,
        ack: answered ? ++tick : Number.POSITIVE_INFINITY,
        durableAt: Number.POSITIVE_INFINITY,
      });
    }
    if (!answered) break;
  }
  const end = ++tick;
  return { ops, from: end, to: end, problems };
}
