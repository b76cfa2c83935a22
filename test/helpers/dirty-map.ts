/**
 * The dirty map of a persistent bitmap as an NBD client sees it: nbdinfo --map over the
 * qemu:dirty-bitmap:NAME metadata context, from qemu-nbd -B (QEMU's view of the image) or from
 * any server at a URI.
 */
import { run } from './run.js';

export interface DirtyExtent {
  offset: number;
  length: number;
  dirty: boolean;
}

function parse(stdout: string): DirtyExtent[] {
  const rows = JSON.parse(stdout) as { offset: number; length: number; type: number }[];
  return rows.map((r) => ({ offset: r.offset, length: r.length, dirty: (r.type & 1) === 1 }));
}

/** The bitmap's dirty map as qemu-nbd -B exports it (read-only, started by nbdinfo). */
export async function qemuDirtyMap(image: string, bitmap: string): Promise<DirtyExtent[]> {
  const r = await run('nbdinfo', [
    `--map=qemu:dirty-bitmap:${bitmap}`,
    '--json',
    '--',
    '[',
    'qemu-nbd',
    '-r',
    '-f',
    'qcow2',
    '-B',
    bitmap,
    image,
    ']',
  ]);
  if (r.code !== 0) throw new Error(`nbdinfo over qemu-nbd -B ${bitmap} failed: ${r.stderr}`);
  return parse(r.stdout);
}

/** The map of `context` from the NBD server at `uri`. */
export async function nbdMap(uri: string, context: string): Promise<DirtyExtent[]> {
  const r = await run('nbdinfo', [`--map=${context}`, '--json', uri]);
  if (r.code !== 0) throw new Error(`nbdinfo --map=${context} ${uri} failed: ${r.stderr}`);
  return parse(r.stdout);
}

/** Only the dirty ranges, for readable assertions. */
export function dirtyRanges(map: readonly DirtyExtent[]): [number, number][] {
  return map.filter((e) => e.dirty).map((e) => [e.offset, e.length]);
}
