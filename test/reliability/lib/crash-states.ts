/**
 * The states a power loss can leave a disk in, from a RecordingDriver's log.
 *
 * A completed flush makes every write that completed before the flush was issued durable. The
 * writes after that (or still in flight) sit in a volatile cache: any subset of them may have
 * reached the medium, and a write may be torn into the 512-byte or 4096-byte pieces a disk
 * writes atomically. A window is the stretch between two completed flushes; for each window
 * this module enumerates subsets of its volatile writes:
 *
 * - at most 10 volatile operations: every subset;
 * - more: every prefix, every "all but one", and random subsets;
 * - torn variants: each write cut into pieces at 512 and 4096 bytes, a random subset of the
 *   pieces applied on top of the operations before it.
 *
 * In "process crash" mode (cache=unsafe, where a host crash promises nothing) only prefixes of
 * the log are built: a killed process leaves every completed write in the host's page cache.
 */

import { FlatDriver } from './flat-driver.js';
import type { HostOp } from './recording-driver.js';

export interface Piece {
  offset: number;
  length: number;
}

export interface Applied {
  /** Index in the log. */
  index: number;
  /** Pieces of a torn write; undefined: the whole operation. */
  pieces?: Piece[];
  /** The granularity the write was torn at. */
  torn?: number;
}

export interface CrashState {
  /** Index of the window (0: before the first completed flush of the log). */
  window: number;
  /** The latest clock value the crash may have come after (every applied op was issued by then). */
  earliest: number;
  /** The latest clock value the crash may have come before (the next flush has not completed). */
  latest: number;
  /** The volatile operations applied, in log order. */
  applied: Applied[];
  /** How the state was chosen ("all 2^n subsets #5", "prefix 3", "random", "torn 512"). */
  how: string;
}

export interface WindowInfo {
  index: number;
  /** The completed flush that starts the window (undefined for the first window). */
  flush: number | undefined;
  /** Writes and truncates made durable by that flush. */
  durable: number[];
  /** Operations that may or may not have reached the disk. */
  volatile: number[];
  earliest: number;
  latest: number;
}

export interface EnumerateOptions {
  randomSubsets: number;
  tornPerWrite: number;
  /** cache=unsafe: prefixes only. */
  processCrashOnly?: boolean;
  random: () => number;
}

const EXHAUSTIVE_LIMIT = 10;

/** The windows of a log, in order. */
export function windowsOf(log: readonly HostOp[], endClock: number): WindowInfo[] {
  const flushes = log
    .map((op, i) => ({ op, i }))
    .filter(({ op }) => op.kind === 'flush' && Number.isFinite(op.end))
    .sort((a, b) => a.op.end - b.op.end);
  const isData = (op: HostOp) => op.kind !== 'flush';
  const windows: WindowInfo[] = [];
  const durableSet = new Set<number>();
  // Window k starts when flush k-1 completed and ends just before flush k completes.
  const bounds = [undefined, ...flushes];
  let coveredStart = Number.NEGATIVE_INFINITY;
  for (let k = 0; k < bounds.length; k++) {
    const f = bounds[k];
    const earliest = f ? f.op.end : 0;
    const latest = k + 1 < bounds.length ? bounds[k + 1]!.op.end - 1 : endClock;
    if (f) coveredStart = Math.max(coveredStart, f.op.start);
    const durable: number[] = [];
    for (let i = 0; i < log.length; i++) {
      const op = log[i]!;
      if (isData(op) && op.end < coveredStart && !durableSet.has(i)) {
        durableSet.add(i);
        durable.push(i);
      }
    }
    const volatile: number[] = [];
    for (let i = 0; i < log.length; i++) {
      const op = log[i]!;
      if (isData(op) && !durableSet.has(i) && op.start <= latest) volatile.push(i);
    }
    windows.push({ index: k, flush: f?.i, durable, volatile, earliest, latest });
  }
  return windows;
}

/** The pieces of a write at a granularity (aligned to absolute offsets). */
export function piecesOf(op: HostOp, granularity: number): Piece[] {
  if (op.kind !== 'write') return [];
  const pieces: Piece[] = [];
  let pos = op.offset;
  const end = op.offset + op.length;
  while (pos < end) {
    const next = Math.min(end, (Math.floor(pos / granularity) + 1) * granularity);
    pieces.push({ offset: pos, length: next - pos });
    pos = next;
  }
  return pieces;
}

export interface WindowStates {
  /** Whole-operation subsets, the most telling first (none, all, all but one, prefixes, then the rest). */
  main: CrashState[];
  /** States with a torn write. */
  torn: CrashState[];
}

/** The crash states of one window. Deterministic for a given random source. */
export function statesOf(log: readonly HostOp[], w: WindowInfo, options: EnumerateOptions): WindowStates {
  const v = w.volatile;
  const n = v.length;
  const mk = (applied: Applied[], how: string): CrashState => {
    let earliest = w.earliest;
    for (const a of applied) earliest = Math.max(earliest, log[a.index]!.start);
    return { window: w.index, earliest, latest: Math.max(earliest, w.latest), applied, how };
  };
  const whole = (indices: number[]): Applied[] => indices.map((index) => ({ index }));
  const main: CrashState[] = [];
  const torn: CrashState[] = [];
  const tornOnTop = (before: number[], target: number, tag: string) => {
    const op = log[target]!;
    if (op.kind !== 'write') return;
    for (const g of [512, 4096]) {
      const pieces = piecesOf(op, g);
      if (pieces.length < 2) continue;
      for (let t = 0; t < options.tornPerWrite; t++) {
        // The first variant keeps the first half (a write cut short); others pick at random.
        const chosen =
          t === 0 ? pieces.slice(0, Math.ceil(pieces.length / 2)) : pieces.filter(() => options.random() < 0.5);
        if (chosen.length === 0 || chosen.length === pieces.length) continue;
        torn.push(mk([...whole(before), { index: target, pieces: chosen, torn: g }], `${tag} torn at ${g}`));
      }
    }
  };

  if (options.processCrashOnly) {
    for (let k = 0; k <= n; k++) {
      main.push(mk(whole(v.slice(0, k)), `prefix ${k}/${n}`));
      if (k < n) tornOnTop(v.slice(0, k), v[k]!, `prefix ${k}/${n} +1`);
    }
    return { main, torn };
  }
  main.push(mk([], `none of ${n}`));
  if (n > 0) main.push(mk(whole(v), `all ${n}`));
  for (let i = 0; i < n && n > 1; i++) main.push(mk(whole(v.filter((_, j) => j !== i)), `all but ${i}/${n}`));
  for (let k = 1; k < n - 1; k++) main.push(mk(whole(v.slice(0, k)), `prefix ${k}/${n}`));
  if (n <= EXHAUSTIVE_LIMIT) {
    const seen = new Set<number>([0, 2 ** n - 1]);
    for (let i = 0; i < n; i++) seen.add((2 ** n - 1) & ~(1 << i));
    for (let k = 1; k < n - 1; k++) seen.add(2 ** k - 1);
    for (let mask = 0; mask < 2 ** n; mask++) {
      if (seen.has(mask)) continue;
      main.push(mk(whole(v.filter((_, i) => (mask >>> i) & 1)), `subset ${mask.toString(2).padStart(n, '0')}`));
    }
  } else {
    for (let r = 0; r < options.randomSubsets; r++) {
      const p = 0.2 + 0.6 * options.random();
      main.push(mk(whole(v.filter(() => options.random() < p)), `random #${r} of ${n}`));
    }
  }
  for (let i = 0; i < n; i++) tornOnTop(v.slice(0, i), v[i]!, `prefix ${i}/${n} +1`);
  // Random subsets with torn writes mixed in.
  const mixed = n <= EXHAUSTIVE_LIMIT ? Math.min(options.randomSubsets, 2 ** n) : options.randomSubsets;
  for (let r = 0; r < Math.ceil(mixed / 4) && n > 0; r++) {
    const applied: Applied[] = [];
    for (const index of v) {
      const x = options.random();
      if (x < 0.4) continue;
      const op = log[index]!;
      if (x < 0.6 && op.kind === 'write') {
        const g = options.random() < 0.5 ? 512 : 4096;
        const pieces = piecesOf(op, g).filter(() => options.random() < 0.5);
        if (pieces.length > 0) applied.push({ index, pieces, torn: g });
      } else {
        applied.push({ index });
      }
    }
    torn.push(mk(applied, `random torn #${r} of ${n}`));
  }
  return { main, torn };
}

/** Applies one operation (or some of its pieces) to a file image. */
export function applyOp(file: FlatDriver, op: HostOp, pieces?: Piece[]): void {
  if (op.kind === 'flush') return;
  if (op.kind === 'truncate') {
    file.truncateSync(op.length);
    return;
  }
  for (const piece of pieces ?? [{ offset: op.offset, length: op.length }]) {
    if (op.data) {
      const from = piece.offset - op.offset;
      file.writeSync(piece.offset, op.data.subarray(from, from + piece.length));
    } else {
      file.zeroSync(piece.offset, piece.length, !op.punch);
    }
  }
}

/**
 * Builds file images window by window: the durable part is kept and grown, each state is a
 * copy of it with the state's volatile operations applied in log order.
 */
export class StateBuilder {
  readonly #log: readonly HostOp[];
  readonly #durable: FlatDriver;

  constructor(base: Buffer, log: readonly HostOp[]) {
    this.#log = log;
    this.#durable = new FlatDriver(base);
  }

  /** Moves the durable image to the start of window `w` (windows must come in order). */
  enter(w: WindowInfo): void {
    for (const i of w.durable) applyOp(this.#durable, this.#log[i]!);
  }

  build(state: CrashState): FlatDriver {
    const file = new FlatDriver(this.#durable.bytes());
    for (const a of state.applied) applyOp(file, this.#log[a.index]!, a.pieces);
    return file;
  }
}
