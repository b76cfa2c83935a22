/**
 * Mutation fuzzing: fast-check flips bits and smashes bytes and fields in the metadata clusters
 * (header, L1, L2 tables, refcount table and blocks, snapshot table and L1s) of small valid
 * images, and each mutant goes through lib/exercise.ts: a clear VdiskError or correct
 * behaviour, no read outside the file, within the per-case time and memory bounds.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { config, LEVEL } from './lib/config.js';
import { type BaseImage, baseImages, type Layout } from './lib/corpus.js';
import { exercise } from './lib/exercise.js';

interface Mutation {
  region: number;
  at: number;
  kind: 'flip' | 'byte' | 'u32' | 'u64';
  bit: number;
  value: bigint;
}

function interesting(L: Layout): bigint[] {
  const cs = BigInt(L.clusterSize);
  const len = BigInt(L.fileLength);
  return [
    0n,
    1n,
    2n ** 64n - 1n,
    2n ** 63n,
    2n ** 62n,
    2n ** 56n - cs,
    2n ** 53n,
    2n ** 32n - 1n,
    2n ** 31n,
    cs,
    len,
    len + cs,
    (len / cs) * cs - cs,
    BigInt(L.l1Offset),
    BigInt(L.reftableOffset),
    BigInt(L.refblocks[0] ?? 0),
    BigInt(L.l2Tables[0]?.offset ?? 0),
    (1n << 63n) | BigInt(L.l1Offset),
    (1n << 63n) | (len + cs),
    (1n << 62n) | 512n,
  ];
}

function mutationArb(L: Layout): fc.Arbitrary<Mutation> {
  const values = interesting(L);
  return fc.record({
    // The header is a fifth of the mutations; the rest spread over every metadata region.
    region: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 4, arbitrary: fc.nat(L.regions.length - 1) }),
    at: fc.oneof({ weight: 2, arbitrary: fc.nat(127) }, { weight: 3, arbitrary: fc.nat(1 << 20) }),
    kind: fc.constantFrom('flip', 'byte', 'u32', 'u64'),
    bit: fc.nat(7),
    value: fc.oneof(fc.constantFrom(...values), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
  }) as fc.Arbitrary<Mutation>;
}

function apply(base: BaseImage, mutations: Mutation[]): Buffer {
  const b = Buffer.from(base.bytes);
  for (const m of mutations) {
    const r = base.layout.regions[m.region % base.layout.regions.length]!;
    const width = m.kind === 'u64' ? 8 : m.kind === 'u32' ? 4 : 1;
    if (r.length < width) continue;
    // Fields are naturally aligned; bytes and bits anywhere.
    let off = r.offset + (m.at % (r.length - width + 1));
    if (width > 1) off -= (off - r.offset) % width;
    if (off + width > b.length) continue;
    if (m.kind === 'flip') b[off] = b[off]! ^ (1 << m.bit);
    else if (m.kind === 'byte') b[off] = Number(m.value & 0xffn);
    else if (m.kind === 'u32') b.writeUInt32BE(Number(m.value & 0xffffffffn), off);
    else b.writeBigUInt64BE(m.value, off);
  }
  return b;
}

describe(`mutation fuzzing of valid images (${LEVEL})`, async () => {
  const bases = await baseImages();
  let total = 0;
  const outcomes = new Map<string, number>();
  for (const [i, base] of bases.entries()) {
    it(`${base.name}: ${config.fuzzRuns} mutants`, async (t) => {
      let runs = 0;
      let slowest = 0;
      let peak = 0;
      const seed = config.seed + i;
      await fc.assert(
        fc.asyncProperty(fc.array(mutationArb(base.layout), { minLength: 1, maxLength: 6 }), async (mutations) => {
          const r = await exercise(apply(base, mutations), { backing: base.backing });
          runs++;
          slowest = Math.max(slowest, r.ms);
          peak = Math.max(peak, r.peakBytes);
          outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
          assert.deepEqual(
            r.problems,
            [],
            `${JSON.stringify(mutations, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}\n${r.problems.join('\n')}`,
          );
        }),
        { numRuns: config.fuzzRuns, seed, endOnFailure: true, includeErrorInReport: true },
      );
      total += runs;
      t.diagnostic(
        `${base.name}: ${runs} mutants (seed ${seed}), slowest ${Math.round(slowest)} ms, peak memory growth ` +
          `${(peak / 2 ** 20).toFixed(1)} MiB`,
      );
    });
  }
  it('counts', (t) => {
    t.diagnostic(
      `fuzz family: ${total} mutants; read-write open outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`,
    );
    console.log(`[reliability] fuzz cases: ${total}`);
  });
});
