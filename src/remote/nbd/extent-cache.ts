/**
 * The runs of the last BLOCK_STATUS answer, so that walking an export (map, convert) costs one
 * request per answer, not one per run. Any change this client makes drops them, and an answer
 * that was asked for before a change began is not kept (the change may have outdated it).
 */
import type { ExtentRun } from './pending-request.js';

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
        for (let j = i + 1; j < this.#runs.length && this.#runs[j]!.flags === run.flags; j++)
          end += this.#runs[j]!.length;
        return { length: end - offset, flags: run.flags };
      }
      pos += run.length;
    }
    return undefined;
  }
}
