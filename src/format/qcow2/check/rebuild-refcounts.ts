/**
 * A new refcount structure from the references counted by the walk (QEMU's
 * rebuild_refcount_structure), for images whose refcount table or blocks are themselves broken.
 *
 * Unlike QEMU, which places the new blocks in any cluster no reference was found for, vdisk puts
 * every new block and the new table after the end of the file, so that nothing the old structure
 * or an entry the walk did not understand might still need is overwritten. The order is that of
 * R5 (docs/architecture.md): the blocks and the table are written and flushed, then one header
 * write (table offset and size together) switches to them, and is flushed. Interrupted before
 * the switch, the image is as it was, only longer; the old structure becomes leaked clusters,
 * which the check frees next. The table's size and its own new blocks are the self-covering
 * refcount area of codec/refcount-area.ts.
 */
import { writeU64 } from '../../../util/u64.js';
import { HEADER, MAX_REFTABLE_SIZE_BYTES } from '../codec/constants.js';
import { newBlockIndexes, selfCoveringRefcountArea } from '../codec/refcount-area.js';
import { encodeReftableEntry } from '../codec/refcount-block.js';
import type { CheckContext } from './context.js';

export interface RebuiltTable {
  offset: number;
  clusters: number;
  /** The table as written (clusters * cluster size bytes). */
  table: Buffer;
}

/** What a rebuild needs: the counts, the file, and the width of the blocks to write. */
export type RebuildInput = Pick<CheckContext, 'refs' | 'cs' | 'file' | 'writeSync'> & {
  g: Pick<CheckContext['g'], 'refcountBlockEntries'>;
};

/**
 * Writes a new refcount structure for the counts in `ctx.refs` after the end of the file, then
 * switches the header to it: by default the table's offset and size; `switchTo` may write more
 * with them in the same sector (a new refcount width).
 */
export async function rebuildRefcountStructure(
  ctx: RebuildInput,
  switchTo?: (offset: number, clusters: number) => Promise<void>,
): Promise<RebuiltTable> {
  const refs = ctx.refs;
  const cs = ctx.cs;
  const perBlock = ctx.g.refcountBlockEntries;
  const perTableCluster = cs / 8;
  /** Block offsets by table index (0: no block); as long as the table's entries. */
  const blocks: number[] = [];
  /** Gives table index `index` the block at cluster `at`; true if the table had to grow for it. */
  const place = (index: number, at: number): boolean => {
    let grown = false;
    if (index >= blocks.length) {
      const entries = Math.ceil((index + 1) / perTableCluster) * perTableCluster;
      while (blocks.length < entries) blocks.push(0);
      grown = true;
    }
    blocks[index] = at * cs;
    return grown;
  };
  const writeBlock = (index: number) =>
    ctx.file.write(blocks[index]!, refs.encodeBlock(index * perBlock, perBlock, cs));

  // rebuild_refcounts_write_refblocks over the clusters in use: each block goes at the end of
  // the file, where it may open a range that needs a block of its own.
  let end = refs.length;
  for (let cluster = 0; cluster < end; cluster++) {
    if (refs.get(cluster) === 0) continue;
    const index = Math.floor(cluster / perBlock);
    if (!blocks[index]) {
      const at = refs.allocateAtEnd(1);
      if (at >= end) end = at + 1; // the block that counts this block must be written too
      place(index, at);
    }
    await writeBlock(index);
    cluster = (index + 1) * perBlock - 1;
  }

  // The table at the end, its new blocks after it; a table that had to grow for them is
  // allocated again, bigger, further on.
  let offset: number;
  let clusters: number;
  let grown: boolean;
  do {
    clusters = Math.ceil((blocks.length * 8) / cs);
    if (clusters * cs > MAX_REFTABLE_SIZE_BYTES) {
      throw new Error('the rebuilt refcount table would be larger than QEMU allows');
    }
    const tableClusters = clusters;
    const hasBlock = (index: number) => !!blocks[index];
    const area = selfCoveringRefcountArea({
      start: refs.length,
      others: 0,
      refcountsPerBlock: perBlock,
      tableClusters: () => tableClusters,
      hasBlock,
    });
    const first = refs.allocateAtEnd(area.clusters);
    offset = first * cs;
    grown = false;
    let at = first + clusters;
    for (const index of newBlockIndexes(area, hasBlock)) grown = place(index, at++) || grown;
    for (let index = area.firstIndex; index <= area.lastIndex; index++) await writeBlock(index);
  } while (grown);

  const table = Buffer.alloc(clusters * cs);
  blocks.forEach((block, i) => {
    if (block) encodeReftableEntry(table, i, block, cs);
  });
  await ctx.file.write(offset, table);
  await ctx.file.flush();
  if (switchTo) {
    await switchTo(offset, clusters);
    return { offset, clusters, table };
  }
  const pointer = Buffer.alloc(12);
  writeU64(pointer, 0, offset, 'refcount table offset');
  pointer.writeUInt32BE(clusters, 8);
  await ctx.writeSync(HEADER.refcountTableOffset, pointer);
  return { offset, clusters, table };
}
