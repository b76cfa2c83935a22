/**
 * The runs of the last BLOCK_STATUS answer, so that walking an export (map, convert) costs one
 * request per answer, not one per run. Any change this client makes drops them, and an answer
 * that was asked for before a change began is not kept (the change may have outdated it).
 */
import type { ExtentRun } from './pending-request.js';

function sameState(a: ExtentRun, b: ExtentRun): boolean {
  return a.flags === b.flags && a.depth === b.depth;
}

/**
 * One list of runs from the two contexts' answers: a run ends wherever either context's does,
 * and the list stops where the shorter answer stops (the rest is asked again later).
 */
export function combineContexts(allocation: ExtentRun[] | undefined, depth: ExtentRun[] | undefined): ExtentRun[] {
  if (!depth) return allocation ?? [];
  const runs: ExtentRun[] = [];
  let a = 0;
  let d = 0;
  // Bytes of the current run of each list already consumed.
  let aUsed = 0;
  let dUsed = 0;
  while (d < depth.length && (!allocation || a < allocation.length)) {
    const dRun = depth[d]!;
    const aRun = allocation?.[a];
    const length = Math.min(dRun.length - dUsed, aRun ? aRun.length - aUsed : Number.POSITIVE_INFINITY);
    runs.push({ length, flags: aRun?.flags ?? 0, depth: dRun.flags });
    dUsed += length;
    if (dUsed === dRun.length) {
      d++;
      dUsed = 0;
    }
    if (aRun) {
      aUsed += length;
      if (aUsed === aRun.length) {
        a++;
        aUsed = 0;
      }
    }
  }
  return runs;
}

export class ExtentCache {
  #start = 0;
  #runs: ExtentRun[] = [];
  #generation = 0;
  /** Where the last lookup found its run: walks in order go on from there. */
  #cursor = 0;
  #cursorPos = 0;

  /** A token to pass to store(): a change after it makes the answer unusable. */
  get generation(): number {
    return this.#generation;
  }

  /** Called before every write, zero write or trim. */
  invalidate(): void {
    this.#generation++;
    this.#runs = [];
    this.#cursor = 0;
    this.#cursorPos = this.#start;
  }

  store(generation: number, start: number, runs: ExtentRun[]): void {
    if (generation !== this.#generation) return;
    this.#start = start;
    this.#runs = runs;
    this.#cursor = 0;
    this.#cursorPos = start;
  }

  /** The run of equal flags that holds `offset`, from `offset` on; undefined if not known. */
  lookup(offset: number): ExtentRun | undefined {
    const resume = offset >= this.#cursorPos;
    let pos = resume ? this.#cursorPos : this.#start;
    for (let i = resume ? this.#cursor : 0; i < this.#runs.length; i++) {
      const run = this.#runs[i]!;
      if (offset < pos + run.length && offset >= pos) {
        this.#cursor = i;
        this.#cursorPos = pos;
        let end = pos + run.length;
        // Neighbours with the same flags are one run for the caller.
        for (let j = i + 1; j < this.#runs.length && sameState(this.#runs[j]!, run); j++) end += this.#runs[j]!.length;
        return { length: end - offset, flags: run.flags, ...(run.depth === undefined ? {} : { depth: run.depth }) };
      }
      pos += run.length;
    }
    return undefined;
  }
}
