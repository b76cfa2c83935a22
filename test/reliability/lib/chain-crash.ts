/**
 * Power loss during the chain commands (commit, rebase, amend): one image's host operations are
 * recorded while a command runs over it (the other images of the chain live in memory), and
 * every crash state crash-states.ts builds from the log is examined: the image must open (a
 * dirty one is repaired on open), check without corruption (leaks are allowed), and read as
 * the case says it may.
 */
import { cacheMode } from '../../../src/block/cache-mode.js';
import type { BlockDriver } from '../../../src/block/driver.js';
import { formatDefinition } from '../../../src/engine/formats.js';
import { checkQcow2 } from '../../../src/format/qcow2/check/check.js';
import { config, rng } from './config.js';
import { StateBuilder, statesOf, windowsOf } from './crash-states.js';
import type { FlatDriver } from './flat-driver.js';
import { RecordingDriver } from './recording-driver.js';

export interface ChainCrashCase {
  name: string;
  /** The recorded image as it is before the command. */
  image: Buffer;
  /** Runs the command over the recording driver standing for the image's file. */
  run(file: RecordingDriver): Promise<void>;
  /** Opens the image in a crash state (its backing file found by the name the header gives). */
  open(file: FlatDriver): Promise<BlockDriver>;
  /** What is wrong with the guest-visible content of a state (empty: nothing). */
  judge(content: Buffer): string[];
}

export interface ChainCrashReport {
  states: number;
  failures: string[];
}

/** Opens a qcow2 image over `file` as a writable open does, backing files through `backing`. */
export function openQcow2Over(
  file: BlockDriver,
  backing: (name: string) => BlockDriver | undefined,
): Promise<BlockDriver> {
  return formatDefinition('qcow2').open(file, {
    filename: 'image.qcow2',
    cache: cacheMode('writeback'),
    readOnly: false,
    openBacking: async (name) => {
      const driver = backing(name);
      if (!driver) throw new Error(`no backing file named '${name}' in this test`);
      return driver;
    },
  });
}

async function examine(c: ChainCrashCase, file: FlatDriver): Promise<string[]> {
  let image: BlockDriver;
  try {
    image = await c.open(file);
  } catch (err) {
    return [`the image does not open: ${(err as Error).message}`];
  }
  const problems: string[] = [];
  const result = await checkQcow2(file);
  if (result.failure !== undefined) problems.push(`check failed: ${result.failure}`);
  if (result.corruptions > 0 || result.checkErrors > 0) {
    problems.push(
      `check: ${result.corruptions} corruptions, ${result.checkErrors} errors: ${result.messages.slice(0, 3).join(' | ')}`,
    );
  }
  const content = Buffer.alloc(image.length());
  await image.read(0, content);
  return [...problems, ...c.judge(content)];
}

export async function runChainCrash(c: ChainCrashCase, seed: number, statesCap = 240): Promise<ChainCrashReport> {
  const random = rng(seed);
  const rec = new RecordingDriver(c.image, { name: 'image.qcow2' });
  rec.startRecording();
  await c.run(rec);
  const windows = windowsOf(rec.log, rec.now);
  const builder = new StateBuilder(rec.base, rec.log);
  const perWindow = Math.max(4, Math.floor(statesCap / Math.max(1, windows.length)));
  const report: ChainCrashReport = { states: 0, failures: [] };
  for (const win of windows) {
    builder.enter(win);
    const { main, torn } = statesOf(rec.log, win, {
      randomSubsets: config.crashRandomSubsets,
      // More torn variants than the workload runs use: a header switch is one write, and its
      // tearing is what these states are for.
      tornPerWrite: Math.max(12, config.crashTornPerWrite),
      random,
    });
    const chosen = [...main.slice(0, Math.ceil(perWindow * 0.7)), ...torn.slice(0, Math.floor(perWindow * 0.3))];
    for (const state of chosen) {
      if (report.failures.length >= 5) return report;
      report.states++;
      const problems = await examine(c, builder.build(state));
      if (problems.length > 0) {
        report.failures.push(`${c.name}: window ${state.window}, ${state.how}: ${problems.join('; ')}`);
      }
    }
  }
  return report;
}
