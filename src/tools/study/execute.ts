/**
 * Issues a workload's requests through a BlockBackend as a guest's queue does: up to
 * `queueDepth` requests in flight; a flush step waits for the requests before it, then flushes.
 * After the time limit no new request is issued; the ones in flight complete, and a write
 * workload ends with a flush, counted in its time, so that data a writeback cache only
 * accepted is paid for.
 */
import { randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { BlockBackend } from '../../block/backend.js';
import type { Step } from './workloads.js';

export interface Percentiles {
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export interface Measurement {
  /** Read and write requests completed (flushes not counted). */
  ops: number;
  bytes: number;
  /** From the first request to the end of the final flush. */
  seconds: number;
  /** bytes / seconds / 2^20 */
  mibPerSecond: number;
  /** ops / seconds */
  iops: number;
  /** Read and write request latencies, milliseconds. */
  latencyMs: Percentiles;
  flushes: number;
  /** Flush latencies, milliseconds (zeros when there was no flush). */
  flushLatencyMs: Percentiles;
  /** True when the time limit stopped the workload before its last request. */
  cutShort: boolean;
}

export interface ExecuteOptions {
  queueDepth: number;
  /** Issue no new request after this many seconds. */
  seconds: number;
  /** End with a flush (write workloads). */
  finalFlush: boolean;
  signal?: AbortSignal;
}

const MAX_REQUEST = 1024 * 1024;
let writeData: Buffer | undefined;

/** Incompressible bytes to write, shared by every write (the engine only reads them). */
function dataToWrite(length: number): Buffer {
  if (!writeData) {
    writeData = Buffer.alloc(MAX_REQUEST);
    randomFillSync(writeData);
  }
  return writeData.subarray(0, length);
}

/** Nearest-rank percentiles of a list of latencies. */
export function percentiles(values: readonly number[]): Percentiles {
  if (values.length === 0) return { p50: 0, p95: 0, p99: 0, max: 0, mean: 0 };
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  let sum = 0;
  for (const v of sorted) sum += v;
  return { p50: at(50), p95: at(95), p99: at(99), max: sorted[sorted.length - 1]!, mean: sum / sorted.length };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function medianPercentiles(list: readonly Percentiles[]): Percentiles {
  return {
    p50: median(list.map((p) => p.p50)),
    p95: median(list.map((p) => p.p95)),
    p99: median(list.map((p) => p.p99)),
    max: median(list.map((p) => p.max)),
    mean: median(list.map((p) => p.mean)),
  };
}

/** The field-by-field median of repeated measurements of one workload (one is itself). */
export function medianMeasurement(samples: readonly Measurement[]): Measurement {
  if (samples.length === 1) return { ...samples[0]! };
  const m = (pick: (s: Measurement) => number) => median(samples.map(pick));
  return {
    ops: m((s) => s.ops),
    bytes: m((s) => s.bytes),
    seconds: m((s) => s.seconds),
    mibPerSecond: m((s) => s.mibPerSecond),
    iops: m((s) => s.iops),
    latencyMs: medianPercentiles(samples.map((s) => s.latencyMs)),
    flushes: m((s) => s.flushes),
    flushLatencyMs: medianPercentiles(samples.map((s) => s.flushLatencyMs)),
    cutShort: samples.some((s) => s.cutShort),
  };
}

export { median };

export async function execute(
  backend: BlockBackend,
  steps: Iterable<Step>,
  options: ExecuteOptions,
): Promise<Measurement> {
  const latencies: number[] = [];
  const flushLatencies: number[] = [];
  const inFlight = new Set<Promise<void>>();
  const freeBuffers: Buffer[] = [];
  let failure: unknown;
  let bytes = 0;
  let cutShort = false;

  const timed = async (fn: () => Promise<void>, into: number[]) => {
    const t = performance.now();
    await fn();
    into.push(performance.now() - t);
  };
  const drain = async () => {
    while (inFlight.size > 0) await Promise.race(inFlight);
    if (failure !== undefined) throw failure;
  };

  const start = performance.now();
  const deadline = start + options.seconds * 1000;
  for (const step of steps) {
    if (options.signal?.aborted) throw options.signal.reason;
    // The first request always goes, so that every workload measures something.
    if (bytes > 0 && performance.now() >= deadline) {
      cutShort = true;
      break;
    }
    if (step.op === 'flush') {
      await drain();
      await timed(() => backend.flush(), flushLatencies);
      continue;
    }
    while (inFlight.size >= options.queueDepth) await Promise.race(inFlight);
    if (failure !== undefined) throw failure;
    const { offset, length } = step;
    let request: Promise<void>;
    if (step.op === 'write') {
      request = timed(() => backend.write(offset, dataToWrite(length)), latencies);
    } else {
      const buf = freeBuffers.pop() ?? Buffer.allocUnsafe(MAX_REQUEST);
      request = timed(() => backend.readInto(offset, buf.subarray(0, length)), latencies).finally(() =>
        freeBuffers.push(buf),
      );
    }
    bytes += length;
    const tracked: Promise<void> = request
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  }
  await drain();
  if (options.finalFlush) await timed(() => backend.flush(), flushLatencies);
  const seconds = Math.max((performance.now() - start) / 1000, 1e-9);
  return {
    ops: latencies.length,
    bytes,
    seconds,
    mibPerSecond: bytes / seconds / (1024 * 1024),
    iops: latencies.length / seconds,
    latencyMs: percentiles(latencies),
    flushes: flushLatencies.length,
    flushLatencyMs: percentiles(flushLatencies),
    cutShort,
  };
}
