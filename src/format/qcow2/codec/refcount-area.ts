/**
 * The size of a self-covering refcount area: a stretch of host clusters that holds new refcount
 * blocks (and perhaps a refcount table) and must itself be counted by refcount blocks. Every
 * new block lengthens the area, which may reach a range no block counts yet and so call for one
 * more block; the answer is the least fixed point, found by counting again until nothing grows.
 *
 * Growing an open image's refcount table, QEMU's qcow2_refcount_metadata_size (which create
 * replays) and the table of a refcount structure rebuilt by check all ask this one question;
 * they differ only in where the area starts and which ranges have blocks already.
 */

export interface RefcountAreaQuestion {
  /** Host cluster index where the area starts. */
  start: number;
  /** Clusters of the area that are neither refcount table nor new refcount blocks. */
  others: number;
  /** Refcounts one refcount block holds. */
  refcountsPerBlock: number;
  /** Clusters of refcount table the area holds when it holds `newBlocks` new blocks. */
  tableClusters(newBlocks: number): number;
  /** Whether refcount-table index `index` has a refcount block already; without it, none has. */
  hasBlock?(index: number): boolean;
}

export interface RefcountArea {
  /** New refcount blocks in the area. */
  blocks: number;
  /** Refcount table clusters in the area. */
  tableClusters: number;
  /** Every cluster of the area: others, table and new blocks. */
  clusters: number;
  /** The refcount-table indexes the area spans, first..last inclusive (last < first when empty). */
  firstIndex: number;
  lastIndex: number;
}

/** The smallest area that counts itself (see the module comment). Pure arithmetic. */
export function selfCoveringRefcountArea(q: RefcountAreaQuestion): RefcountArea {
  const perBlock = q.refcountsPerBlock;
  const firstIndex = Math.floor(q.start / perBlock);
  const hasBlock = q.hasBlock;
  const missingBlocks = (last: number): number => {
    if (!hasBlock) return last - firstIndex + 1;
    let missing = 0;
    for (let index = firstIndex; index <= last; index++) if (!hasBlock(index)) missing++;
    return missing;
  };
  let blocks = 0;
  let table = q.tableClusters(0);
  for (;;) {
    const clusters = q.others + table + blocks;
    const lastIndex = Math.floor((q.start + clusters - 1) / perBlock);
    const needed = clusters === 0 ? 0 : missingBlocks(lastIndex);
    const neededTable = q.tableClusters(needed);
    if (needed === blocks && neededTable === table) {
      return {
        blocks,
        tableClusters: table,
        clusters,
        firstIndex,
        lastIndex: clusters === 0 ? firstIndex - 1 : lastIndex,
      };
    }
    blocks = needed;
    table = neededTable;
  }
}

/** The refcount-table indexes of `area` that need a new block, in ascending order. */
export function newBlockIndexes(area: RefcountArea, hasBlock: (index: number) => boolean): number[] {
  const indexes: number[] = [];
  for (let index = area.firstIndex; index <= area.lastIndex; index++) if (!hasBlock(index)) indexes.push(index);
  return indexes;
}
