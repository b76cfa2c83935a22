/**
 * A new refcount width (amend -o refcount_bits=N): every reference is counted as check counts
 * it, a new refcount structure of the new width is written after the end of the file, and one
 * write of the first sector switches the table's offset, its size and the width together.
 * Interrupted before that write, the image is as it was with leaked clusters at its end; after
 * it, the old structure's clusters are free.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import { writeU64 } from '../../../util/u64.js';
import { countReferences } from '../check/check.js';
import { rebuildRefcountStructure } from '../check/rebuild-refcounts.js';
import { ReferenceCounts } from '../check/reference-counts.js';
import { HEADER } from '../codec/constants.js';
import type { Qcow2Header } from '../codec/header.js';
import { maxRefcount } from '../codec/refcount-block.js';

export async function changeRefcountOrder(file: BlockDriver, header: Qcow2Header, order: number): Promise<void> {
  const cs = 2 ** header.clusterBits;
  const census = await countReferences(file);
  const old = census.refs;
  const released = new Set(census.refcountStructure.map((offset) => Math.floor(offset / cs)));
  const refs = new ReferenceCounts(order, old.length);
  const max = maxRefcount(order);
  for (let cluster = 0; cluster < old.length; cluster++) {
    const count = released.has(cluster) ? 0 : old.get(cluster);
    if (count > max) {
      throw new VdiskError(
        'EINVAL',
        `Cannot decrease refcount entry width to ${2 ** order} bits: Cluster at offset 0x${(cluster * cs).toString(16)} has a refcount of ${count}`,
      );
    }
    if (count !== 0) refs.set(cluster, count);
  }
  const writeSync = async (offset: number, data: Buffer) => {
    await file.write(offset, data);
    await file.flush();
  };
  const refcountBlockEntries = (cs * 8) / 2 ** order;
  await rebuildRefcountStructure(
    { refs, cs, file, writeSync, g: { refcountBlockEntries } },
    async (offset, clusters) => {
      // Bytes 48 to 100 of the header: the table, the snapshot fields and features as they are, the width.
      const fields = Buffer.alloc(HEADER.headerLength - HEADER.refcountTableOffset);
      const at = (field: number) => field - HEADER.refcountTableOffset;
      writeU64(fields, at(HEADER.refcountTableOffset), offset);
      fields.writeUInt32BE(clusters, at(HEADER.refcountTableClusters));
      fields.writeUInt32BE(header.nbSnapshots, at(HEADER.nbSnapshots));
      writeU64(fields, at(HEADER.snapshotsOffset), header.snapshotsOffset);
      writeU64(fields, at(HEADER.incompatibleFeatures), header.incompatibleFeatures);
      writeU64(fields, at(HEADER.compatibleFeatures), header.compatibleFeatures);
      writeU64(fields, at(HEADER.autoclearFeatures), header.autoclearFeatures);
      fields.writeUInt32BE(order, at(HEADER.refcountOrder));
      await writeSync(HEADER.refcountTableOffset, fields);
    },
  );
}
