/**
 * The runs of the last few mapping lookups, kept while the L2 tables' generation is unchanged.
 * Several callers walking an image at once (an NBD client's connections, qemu-img convert's
 * requests, map) each find their chunk here instead of looking it up again per run.
 */
import type { Run } from './mapping.js';

/** The runs of one lookup: they cover [start, end) without gaps. */
export interface Lookup {
  start: number;
  end: number;
  runs: readonly Run[];
}

export class RunCache {
  readonly #capacity: number;
  #generation = -1;
  /** Least recently used first. */
  #lookups: Lookup[] = [];

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** The lookup holding guest `offset`, if one was kept under the tables' current `generation`. */
  find(offset: number, generation: number): Lookup | undefined {
    if (generation !== this.#generation) {
      this.#lookups = [];
      this.#generation = generation;
      return undefined;
    }
    const lookups = this.#lookups;
    for (let i = lookups.length - 1; i >= 0; i--) {
      const lookup = lookups[i]!;
      if (offset >= lookup.start && offset < lookup.end) {
        if (i !== lookups.length - 1) lookups.push(...lookups.splice(i, 1));
        return lookup;
      }
    }
    return undefined;
  }

  /** Keeps a lookup made entirely under `generation` (one that saw a change is not kept). */
  add(lookup: Lookup, generation: number): void {
    if (generation !== this.#generation) {
      this.#lookups = [];
      this.#generation = generation;
    }
    this.#lookups.push(lookup);
    if (this.#lookups.length > this.#capacity) this.#lookups.shift();
  }
}

/** The index of the run holding guest `offset` (runs are sorted and consecutive), or -1. */
export function runIndexAt(runs: readonly Run[], offset: number): number {
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const run = runs[mid]!;
    if (offset < run.offset) hi = mid - 1;
    else if (offset >= run.offset + run.length) lo = mid + 1;
    else return mid;
  }
  return -1;
}
