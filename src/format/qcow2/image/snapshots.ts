/**
 * Loading the internal snapshot table of an open image: enough to protect the snapshots'
 * metadata from overlapping writes and to list them. The table is read in growing pieces, so
 * a hostile count or length costs at most what the file holds (and QEMU's 64 MiB limit).
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import { MAX_SNAPSHOTS_SIZE } from '../codec/constants.js';
import type { Qcow2Header } from '../codec/header.js';
import { decodeSnapshotTable, type Qcow2Snapshot, validateSnapshotL1 } from '../codec/snapshot-table.js';

export async function loadSnapshots(
  file: BlockDriver,
  header: Qcow2Header,
): Promise<{ snapshots: Qcow2Snapshot[]; size: number }> {
  if (header.nbSnapshots === 0) return { snapshots: [], size: 0 };
  const available = Math.min(MAX_SNAPSHOTS_SIZE, file.length() - header.snapshotsOffset);
  if (available <= 0) throw new VdiskError('ECORRUPT', 'The snapshot table lies past the end of the file');
  let size = Math.min(available, 65536);
  for (;;) {
    const buf = Buffer.alloc(size);
    await file.read(header.snapshotsOffset, buf);
    try {
      const { snapshots, size: tableSize } = decodeSnapshotTable(buf, header.nbSnapshots, {
        version: header.version,
        imageSize: header.size,
      });
      const clusterSize = 2 ** header.clusterBits;
      for (const s of snapshots) {
        validateSnapshotL1(s, clusterSize);
        if (s.l1TableOffset + s.l1Size * 8 > file.length()) {
          throw new VdiskError('ECORRUPT', `The L1 table of snapshot '${s.name}' lies past the end of the file`);
        }
      }
      return { snapshots, size: tableSize };
    } catch (err) {
      const short = err instanceof VdiskError && /extends beyond the end/.test(err.message);
      if (!short || size >= available) throw err;
      size = Math.min(available, size * 2);
    }
  }
}
