/**
 * Time and memory bounds for one case: wall time, the peak of heap + external memory while the
 * case runs (sampled every 2 ms), and the largest single Buffer the code asked for (a
 * hostile count times a size shows up here even when it fails before the memory is touched).
 */
import v8 from 'node:v8';

export interface Measured<T> {
  value?: T;
  error?: unknown;
  timedOut: boolean;
  ms: number;
  /** Peak growth of heapUsed + external over the case, in bytes. */
  peakBytes: number;
  /** The largest Buffer.alloc / allocUnsafe / allocUnsafeSlow request, in bytes. */
  largestAlloc: number;
}

let largest = 0;
let patched = false;

function patchBufferAllocators(): void {
  if (patched) return;
  patched = true;
  for (const name of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
    const original = Buffer[name] as (...args: unknown[]) => Buffer;
    // biome-ignore lint/suspicious/noExplicitAny: wrapping Buffer's static allocators
    (Buffer as any)[name] = function (this: unknown, size: number, ...rest: unknown[]) {
      if (typeof size === 'number' && size > largest) largest = size;
      return original.call(this, size, ...rest);
    };
  }
}

function used(): number {
  // Ten times cheaper than process.memoryUsage(), which also reads the RSS.
  const h = v8.getHeapStatistics();
  return h.used_heap_size + h.external_memory;
}

export async function measured<T>(fn: () => Promise<T>, timeoutMs: number): Promise<Measured<T>> {
  patchBufferAllocators();
  largest = 0;
  const base = used();
  let peak = base;
  const sampler = setInterval(() => {
    const now = used();
    if (now > peak) peak = now;
  }, 2);
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const out: Measured<T> = { timedOut: false, ms: 0, peakBytes: 0, largestAlloc: 0 };
  try {
    const r = await Promise.race([fn().then((value) => ({ value })), timeout]);
    if (r === 'timeout') out.timedOut = true;
    else out.value = r.value;
  } catch (err) {
    out.error = err;
  } finally {
    clearInterval(sampler);
    clearTimeout(timer);
  }
  const now = used();
  if (now > peak) peak = now;
  out.ms = performance.now() - started;
  out.peakBytes = Math.max(0, peak - base);
  out.largestAlloc = largest;
  return out;
}
