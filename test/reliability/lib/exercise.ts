/**
 * What every hostile or fuzzed image goes through: open read-write (a dirty image is repaired),
 * read, block status, write, read back, flush, close; open read-only and read; check. Each step
 * must either work or fail with a VdiskError of a known code and a one-line message, never read
 * outside the file, and stay within the time and memory bounds (measured per case).
 */
import { BlockBackend } from '../../../src/block/backend.js';
import { cacheMode } from '../../../src/block/cache-mode.js';
import type { BlockDriver } from '../../../src/block/driver.js';
import { ERROR_CODES, VdiskError } from '../../../src/block/errors.js';
import { formatDefinition } from '../../../src/engine/formats.js';
import { checkQcow2 } from '../../../src/format/qcow2/check/check.js';
import { RawDriver } from '../../../src/format/raw/driver.js';
import { BoundedFile } from './bounded-file.js';
import { config } from './config.js';
import { FlatDriver } from './flat-driver.js';
import { measured } from './measure.js';

export interface ExerciseResult {
  /** How the read-write open ended: 'opened' or the error code. */
  outcome: string;
  /** The read-write open's error message, when it failed. */
  message?: string;
  problems: string[];
  ms: number;
  peakBytes: number;
  largestAlloc: number;
}

const CASE_LIMIT_LARGEST_ALLOC = 72 * 1024 * 1024;

function clearError(err: unknown): string | undefined {
  if (!(err instanceof VdiskError)) {
    return `not a VdiskError: ${err instanceof Error ? `${err.name}: ${err.message} ${err.stack?.split('\n')[1]?.trim()}` : String(err)}`;
  }
  if (!(ERROR_CODES as readonly string[]).includes(err.code)) return `unknown code ${err.code}`;
  if (!err.message || err.message.includes('\n') || err.message.length > 1000) {
    return `not a one-line message: ${JSON.stringify(err.message.slice(0, 300))}`;
  }
  return undefined;
}

function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buf[i] = (seed * 131 + i * 7 + (i >> 9)) & 0xff;
  return buf;
}

async function steps(
  bytes: Buffer,
  backing: Buffer | undefined,
  problems: string[],
  note: (outcome: string, message?: string) => void,
) {
  const files: BoundedFile[] = [];
  const openBacking = async (): Promise<BlockDriver> => {
    if (!backing) throw new VdiskError('ENOENT', 'Could not open backing file: no such file');
    return new RawDriver(new FlatDriver(backing, { readOnly: true, copy: false }));
  };
  const open = async (readOnly: boolean) => {
    const file = new BoundedFile(bytes, { name: 'hostile.qcow2', readOnly });
    files.push(file);
    const image = await formatDefinition('qcow2').open(file, {
      filename: 'hostile.qcow2',
      cache: cacheMode('writeback'),
      readOnly,
      openBacking,
    });
    return new BlockBackend(image, { writeCache: true, readOnly });
  };
  /** Runs a step: a clear VdiskError is fine (returns undefined), anything else is a problem. */
  const step = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      const bad = clearError(err);
      if (bad) problems.push(`${what}: ${bad}`);
      return undefined;
    }
  };
  const readSamples = async (backend: BlockBackend, mode: string) => {
    const len = backend.length;
    const offsets = [...new Set([0, Math.floor(len / 2 / 65536) * 65536, Math.max(0, len - 65536)])];
    for (const off of offsets) {
      const n = Math.min(65536, len - off);
      if (n > 0) await step(`${mode} read at ${off}`, () => backend.read(off, n));
    }
    let pos = 0;
    for (let i = 0; i < 16 && pos < len; i++) {
      const want = Math.min(len - pos, 2 ** 30);
      const ext = await step(`${mode} block status at ${pos}`, () => backend.blockStatus(pos, want));
      if (!ext) break;
      if (!(ext.length > 0 && ext.length <= want)) {
        problems.push(`${mode} block status at ${pos}: length ${ext.length} for a request of ${want}`);
        break;
      }
      pos += ext.length;
    }
  };

  // Read-write: what a user who trusts the image would do.
  let rw: BlockBackend | undefined;
  try {
    rw = await open(false);
    note('opened');
  } catch (err) {
    const bad = clearError(err);
    if (bad) problems.push(`read-write open: ${bad}`);
    note(err instanceof VdiskError ? err.code : 'error', err instanceof Error ? err.message : String(err));
  }
  if (rw) {
    const backend = rw;
    await readSamples(backend, 'read-write');
    const len = backend.length;
    for (const [k, off] of [0, Math.floor(len / 2 / 65536) * 65536].entries()) {
      if (off + 4096 > len) continue;
      const data = pattern(4096, k + 1);
      const wrote = await step(`write at ${off}`, async () => {
        await backend.write(off, data);
        return true;
      });
      if (wrote) {
        const back = await step(`read back at ${off}`, () => backend.read(off, 4096));
        if (back && !back.equals(data) && !(await aliased(backend, off, 4096))) {
          problems.push(`write at ${off} succeeded but reads back different data`);
        }
      }
    }
    if (len >= 3 * 65536) await step('write zeroes', () => backend.writeZeroes(65536, 65536, { mayUnmap: true }));
    await step('flush', () => backend.flush());
    await step('close', () => backend.close());
  }

  // Read-only: what info, map and compare do.
  const ro = await step('read-only open', () => open(true));
  if (ro) {
    await readSamples(ro, 'read-only');
    await step('read-only close', () => ro.close());
  }

  // Check: must finish with a report or a clear error, on the original bytes.
  const checkFile = new BoundedFile(bytes, { name: 'hostile.qcow2', readOnly: true });
  files.push(checkFile);
  await step('check', () => checkQcow2(checkFile));

  for (const f of files) for (const v of f.violations) problems.push(v);
}

/**
 * True when two guest ranges of [offset, offset+length) map to overlapping host bytes: the image
 * says they alias, so a write to one shows in the other (QEMU reads such an image the same way).
 */
async function aliased(backend: BlockBackend, offset: number, length: number): Promise<boolean> {
  const hosts: { start: number; end: number }[] = [];
  try {
    for (let pos = offset; pos < offset + length; ) {
      const e = await backend.blockStatus(pos, offset + length - pos);
      if (e.hostOffset !== undefined && e.data) hosts.push({ start: e.hostOffset, end: e.hostOffset + e.length });
      pos += e.length;
    }
  } catch {
    return false;
  }
  return hosts.some((a, i) => hosts.some((b, j) => i !== j && a.start < b.end && b.start < a.end));
}

/** Runs an image through every step, measuring time and memory. */
export async function exercise(
  bytes: Buffer,
  options: { backing?: Buffer; timeBoundMs?: number } = {},
): Promise<ExerciseResult> {
  const bound = options.timeBoundMs ?? config.caseTimeMs;
  const problems: string[] = [];
  let outcome = 'error';
  let message: string | undefined;
  const m = await measured(
    () =>
      steps(bytes, options.backing, problems, (o, msg) => {
        outcome = o;
        message = msg;
      }),
    bound * 5,
  );
  if (m.error) problems.push(`the exercise itself threw: ${(m.error as Error).stack ?? m.error}`);
  if (m.timedOut) problems.push(`did not finish within ${bound * 5} ms (hang?)`);
  else if (m.ms > bound) problems.push(`took ${Math.round(m.ms)} ms (bound ${bound} ms)`);
  if (m.peakBytes > config.caseMemoryBytes) {
    problems.push(
      `memory grew by ${Math.round(m.peakBytes / 2 ** 20)} MiB (bound ${config.caseMemoryBytes / 2 ** 20} MiB)`,
    );
  }
  if (m.largestAlloc > CASE_LIMIT_LARGEST_ALLOC) {
    problems.push(`asked for a ${Math.round(m.largestAlloc / 2 ** 20)} MiB buffer`);
  }
  return { outcome, message, problems, ms: m.ms, peakBytes: m.peakBytes, largestAlloc: m.largestAlloc };
}
