/**
 * Which bytes of a READ the server's structured chunks have covered. A successful reply must
 * cover the request exactly once: a gap would hand the caller bytes nobody sent (a silent short
 * read), an overlap is a server contradicting itself. Chunks in order cost nothing to track;
 * out-of-order chunks are kept, up to a bound, and checked when the reply is done.
 */
export class ReadCoverage {
  /** Bytes [0, #front) are covered by chunks that arrived in order. */
  #front = 0;
  /** Chunks that did not start at the front: [start, end) pairs. */
  readonly #others: number[] = [];
  #total = 0;
  readonly #length: number;

  static readonly MAX_OUT_OF_ORDER = 65536;

  constructor(length: number) {
    this.#length = length;
  }

  /** Records [start, start + length) of the request; false when that is more than the request holds. */
  add(start: number, length: number): boolean {
    this.#total += length;
    if (this.#total > this.#length) return false;
    if (start === this.#front) this.#front += length;
    else {
      if (this.#others.length >= 2 * ReadCoverage.MAX_OUT_OF_ORDER) return false;
      this.#others.push(start, start + length);
    }
    return true;
  }

  /** True when the chunks tile the request: every byte once, none twice. */
  complete(): boolean {
    if (this.#total !== this.#length) return false;
    if (this.#others.length === 0) return this.#front === this.#length;
    const runs: Array<[number, number]> = [[0, this.#front]];
    for (let i = 0; i < this.#others.length; i += 2) runs.push([this.#others[i]!, this.#others[i + 1]!]);
    runs.sort((a, b) => a[0] - b[0]);
    let pos = 0;
    for (const [start, end] of runs) {
      if (start !== pos) return false;
      pos = end;
    }
    return pos === this.#length;
  }
}
