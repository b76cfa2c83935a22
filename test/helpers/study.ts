/**
 * Helpers for the study's tests: `vdisk study` run with its reports in a test directory, and
 * results built from fixed figures for the pure ranking code.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Measurement } from '../../src/tools/study/execute.js';
import type { CombinationResult, WorkloadResult } from '../../src/tools/study/results.js';
import type { WorkloadName } from '../../src/tools/study/workloads.js';
import { type RunResult, vdisk } from './run.js';

/**
 * Runs `vdisk study ARGS --json DIR/study.json --html DIR/study.html`, checks that it succeeded,
 * and returns what it printed and the JSON it wrote.
 */
export async function studyInto(
  dir: string,
  args: readonly string[],
): Promise<{ r: RunResult; json: string; html: string; report: ReturnType<typeof JSON.parse> }> {
  const json = path.join(dir, 'study.json');
  const html = path.join(dir, 'study.html');
  const r = await vdisk(['study', ...args, '--json', json, '--html', html]);
  assert.equal(r.code, 0, r.stderr);
  return { r, json, html, report: JSON.parse(await readFile(json, 'utf8')) };
}

/** A measurement whose MiB/s and IOPS are both `value`. */
export function measurementOf(value: number): Measurement {
  const p = { p50: 1, p95: 1, p99: 1, max: 1, mean: 1 };
  return {
    ops: 1,
    bytes: 1,
    seconds: 1,
    mibPerSecond: value,
    iops: value,
    latencyMs: p,
    flushes: 0,
    flushLatencyMs: p,
    cutShort: false,
  };
}

/** A workload whose samples are `values`; its figures are their median, as the runner makes them. */
export function workloadOf(name: WorkloadName, values: readonly number[]): WorkloadResult {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { name, queueDepth: 1, ...measurementOf(median), samples: values.map(measurementOf) };
}

/** A combination ("raw/off/none") with the given workloads' samples; not ok without any. */
export function combinationOf(
  id: string,
  workloads: Partial<Record<WorkloadName, number[]>>,
  status: CombinationResult['status'] = 'ok',
): CombinationResult {
  const [format, prealloc, cache] = id.split('/') as [
    CombinationResult['format'],
    CombinationResult['prealloc'],
    CombinationResult['cache'],
  ];
  return {
    id,
    format,
    prealloc,
    cache,
    safety: 'flush-safe',
    status,
    reason: status === 'ok' ? null : 'no',
    create: null,
    afterRun: null,
    workloads:
      status === 'ok'
        ? Object.entries(workloads).map(([name, values]) => workloadOf(name as WorkloadName, values!))
        : [],
  };
}
