/**
 * Backing chains for the chain commands' tests (commit, rebase, amend, convert -B): built with
 * QEMU's tools into two identical directories, one for vdisk and one for qemu-img, and the
 * checks that compare what each left.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { vdisk } from './run.js';
import { run, runOk } from './tools.js';

export const QEMU_TOOLS = ['qemu-img', 'qemu-io'];

export interface Layer {
  name: string;
  format: 'raw' | 'qcow2';
  /** qcow2 creation options (without backing). */
  options?: string;
  size?: string;
  /** qemu-io commands run on the layer once it exists. */
  io?: string[];
}

/** Builds the layers bottom up, each the backing file of the next, in `dir`. */
export function buildChain(dir: string, layers: readonly Layer[]): void {
  layers.forEach((layer, i) => {
    const file = join(dir, layer.name);
    const args = ['create', '-q', '-f', layer.format];
    if (layer.options) args.push('-o', layer.options);
    const below = layers[i - 1];
    if (below) args.push('-b', below.name, '-F', below.format);
    args.push(file);
    if (layer.size || !below) args.push(layer.size ?? '4M');
    runOk('qemu-img', args);
    if (layer.io?.length) qemuIo(file, layer.format, ...layer.io);
  });
}

export function qemuIo(file: string, format: string, ...commands: string[]): void {
  runOk('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), file]);
}

/** Two directories holding the same chain: [vdisk's, qemu-img's]. */
export async function twinChains(dir: string, layers: readonly Layer[]): Promise<[string, string]> {
  const ours = join(dir, 'vdisk');
  const theirs = join(dir, 'qemu');
  for (const d of [ours, theirs]) {
    await mkdir(d);
    buildChain(d, layers);
  }
  return [ours, theirs];
}

/**
 * Runs `vdisk <args>` in `ours` and `qemu-img <args>` in `theirs`: their exit codes and stdout
 * must agree, and a failure is one line on vdisk's stderr.
 */
export async function bothRun(ours: string, theirs: string, args: string[]): Promise<{ code: number; stderr: string }> {
  const mine = await vdisk(args, { cwd: ours });
  const reference = runIn(theirs, 'qemu-img', args);
  assert.equal(mine.code, reference.status, `exit codes: vdisk ${mine.stderr} / qemu-img ${reference.stderr}`);
  assert.equal(mine.stdout, reference.stdout, 'the same output');
  if (mine.code !== 0) assert.match(mine.stderr, /^vdisk: [^\n]+\n$/, 'one line on stderr');
  return { code: mine.code, stderr: mine.stderr };
}

function runIn(cwd: string, cmd: string, args: string[]): { status: number; stdout: string; stderr: string } {
  return run('sh', ['-c', `cd "$1" && shift && exec "$@"`, 'sh', cwd, cmd, ...args]);
}

/** qemu-img compare of two images (formats probed): they read the same. */
export function assertSameContent(a: string, b: string, what = 'the same content'): void {
  const r = run('qemu-img', ['compare', '-U', a, b]);
  assert.equal(r.status, 0, `${what}: ${r.stdout}${r.stderr}`);
}

/** qemu-img check finds nothing wrong. */
export function assertClean(file: string): void {
  const r = run('qemu-img', ['check', '-U', file]);
  assert.equal(r.status, 0, `qemu-img check ${file}: ${r.stdout}${r.stderr}`);
}

/** qemu-img info --output=json, without what depends on where the file lies or how big it grew. */
export function infoFields(file: string): Record<string, unknown> {
  const info = JSON.parse(runOk('qemu-img', ['info', '-U', '--output=json', file])) as Record<string, unknown>;
  const keep = ['format', 'virtual-size', 'cluster-size', 'backing-filename', 'backing-filename-format'];
  const out: Record<string, unknown> = {};
  for (const key of keep) out[key] = info[key];
  out['format-specific'] = info['format-specific'];
  return out;
}

/** qemu-img map --output=json with the directory taken out of file names. */
export function mapOf(file: string, dir: string): string {
  return runOk('qemu-img', ['map', '-U', '--output=json', file]).replaceAll(`${dir}/`, '');
}

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/**
 * What qemu-img map says each range is (depth, present, zero, data), host offsets left out and
 * neighbours that agree merged: where two allocators put clusters in the file may differ.
 */
export function rangesOf(file: string): Omit<MapEntry, 'offset'>[] {
  const map = JSON.parse(runOk('qemu-img', ['map', '-U', '--output=json', file])) as MapEntry[];
  const out: Omit<MapEntry, 'offset'>[] = [];
  for (const { offset: _offset, ...entry } of map) {
    const last = out[out.length - 1];
    const same =
      last &&
      last.depth === entry.depth &&
      last.present === entry.present &&
      last.zero === entry.zero &&
      last.data === entry.data;
    if (same) last.length += entry.length;
    else out.push({ ...entry });
  }
  return out;
}
