/**
 * Failing disks: a workload runs on an image over a FaultDriver that fails the Nth host
 * operation with EIO or ENOSPC, once or from then on. Whatever N is:
 *
 * - every failed request reaches the BlockBackend caller as a VdiskError with the injected code;
 * - the image left behind opens, and check finds no corruption (never refcount < references;
 *   leaks are allowed);
 * - every request acknowledged before a successful flush reads back (after a one-off fault and a
 *   successful close: every acknowledged request), and no sector holds what nobody wrote there.
 */
import { BlockBackend } from '../../../src/block/backend.js';
import { type CacheModeName, cacheMode } from '../../../src/block/cache-mode.js';
import type { BlockDriver } from '../../../src/block/driver.js';
import { isVdiskError } from '../../../src/block/errors.js';
import { type CrashWorkload, examine, openFormat, template } from './crash-sim.js';
import { FaultDriver, type FaultPlan } from './fault-driver.js';
import { FlatDriver } from './flat-driver.js';
import { Guest, GuestModel, type GuestPolicy } from './guest.js';

export interface FaultCaseResult {
  /** Host operations the workload made (without a fault). */
  hostOps: number;
  injected: number;
  guestErrors: number;
  problems: string[];
}

/** Runs one workload with one fault plan; `plan.at = 0` counts the host operations. */
export async function runFaultCase(w: CrashWorkload, cache: CacheModeName, plan: FaultPlan): Promise<FaultCaseResult> {
  const mode = cacheMode(cache);
  const t = await template(w);
  const flat = new FlatDriver(t.image, { name: 'image.qcow2' });
  const fault = new FaultDriver(flat, plan);
  const problems: string[] = [];
  const label = `${w.name} cache=${cache} ${plan.errno} ${plan.mode} at host op ${plan.at}`;
  const expectCode = (err: unknown, what: string) => {
    if (!isVdiskError(err) || err.code !== plan.errno) {
      const shown = isVdiskError(err) ? `${err.code}: ${err.message}` : String((err as Error)?.stack ?? err);
      problems.push(`${label}: ${what} failed with ${shown}, expected ${plan.errno} (fault: ${fault.firstFault})`);
    }
  };
  let image: BlockDriver;
  try {
    image = await openFormat(w, fault, cache, t.backing);
  } catch (err) {
    expectCode(err, 'open');
    return { hostOps: fault.count, injected: fault.injected, guestErrors: 1, problems };
  }
  const backend = new BlockBackend(image, { writeCache: mode.writeCache });
  let clock = 0;
  const policy: GuestPolicy = {
    writeCache: mode.writeCache,
    noFlush: mode.noFlush,
    discardReadsInitial: w.options?.compat === '0.10' && w.backing !== undefined,
    clusterSize: image.describe?.().clusterSize ?? 65536,
  };
  const guest = new Guest(backend, { tick: () => ++clock }, policy);
  let guestErrors = 0;
  let initial: Buffer;
  try {
    initial = await backend.read(0, backend.length);
  } catch (err) {
    expectCode(err, 'the first read');
    return { hostOps: fault.count, injected: fault.injected, guestErrors: 1, problems };
  }
  guest.recording = true;
  guest.onError = (err, op) => {
    guestErrors++;
    expectCode(err, `guest ${op.kind} #${op.id}`);
  };
  try {
    await w.run(guest, () => 0.5);
  } catch (err) {
    problems.push(`${label}: the workload threw outside a request: ${(err as Error).stack}`);
  }
  let closed = true;
  try {
    await backend.close();
  } catch (err) {
    closed = false;
    expectCode(err, 'close');
  }
  if (plan.at > 0 && fault.injected === 0) {
    // The workload made fewer operations this time; nothing to judge beyond a clean run.
  }
  if (plan.at === 0 && guestErrors > 0) problems.push(`${label}: requests failed without a fault`);
  // A one-off fault followed by a successful close: everything acknowledged is durable.
  guest.settle(plan.mode === 'once' && closed && !mode.noFlush);
  const model = new GuestModel(initial, guest.ops, policy);
  const after = new FlatDriver(flat.bytes(), { name: 'image.qcow2' });
  const ex = await examine(w, after, cache, t.backing);
  const where = `${label} (fault: ${fault.firstFault ?? 'none'})`;
  for (const p of ex.problems) problems.push(`${where}: ${p}`);
  if (ex.content) {
    const now = clock + 1;
    for (const p of model.check(ex.content, now, now)) problems.push(`${where}: ${p}`);
  }
  return { hostOps: fault.count, injected: fault.injected, guestErrors, problems };
}
