/**
 * Internal snapshots of an open qcow2 image: create, apply (goto) and delete, in QEMU's on-disk
 * layout and with its reference counting (block/qcow2-snapshot.c), ordered so that a crash at
 * any point leaves the old state or the new one, with leaked clusters at worst:
 *
 * - the dirty bit (v3) is set first and cleared last: an image left in between is checked and
 *   repaired (`check -r all`) when it is next opened read-write, as with lazy refcounts;
 * - references are added before anything names the new owner, and dropped only after the header
 *   or table that named the old one no longer does (R1, R4 in docs/architecture.md);
 * - COPIED flags are cleared before a refcount grows past 1 and set only after it fell back to 1
 *   (copied-flags.ts), so no crash state lets a writer change a cluster a snapshot keeps;
 * - new tables (the snapshot's L1, the active L1 on apply, the snapshot table) are written whole
 *   at a new place and made durable before one header write switches to them (R5).
 */
import type { BlockDriver, SnapshotInfo } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { Mutex } from '../../../util/mutex.js';
import { INCOMPAT_DIRTY, MAX_SNAPSHOTS } from '../codec/constants.js';
import { type Qcow2Snapshot, validateSnapshotL1 } from '../codec/snapshot-table.js';
import type { HeaderStore } from '../image/header-store.js';
import { updateActiveFlags, withCopiedFlags } from './copied-flags.js';
import { findSnapshot, nextSnapshotId } from './find.js';
import { addReferences, checkAddable, checkDroppable, dropReferences, type ReferenceDeps } from './references.js';
import type { SnapshotTable } from './table-store.js';

export interface SnapshotManagerDeps extends ReferenceDeps {
  file: BlockDriver;
  header: HeaderStore;
  table: SnapshotTable;
  metadataLock: Mutex;
  /** What the image does before its first change (autoclear bits, lazy refcounts' dirty bit). */
  beforeChange: () => Promise<void>;
}

/** What a new snapshot records besides the disk's content (qemu-img records the date only). */
export interface NewSnapshot {
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNs?: bigint;
  icount?: bigint;
}

export class SnapshotManager {
  readonly #d: SnapshotManagerDeps;

  constructor(deps: SnapshotManagerDeps) {
    this.#d = deps;
  }

  /** The snapshots, as info and snapshot -l list them. */
  list(): SnapshotInfo[] {
    return this.#d.table.entries.map(snapshotInfo);
  }

  /** Records the image's content now as a new snapshot (qemu-img snapshot -c). */
  create(snapshot: NewSnapshot): Promise<SnapshotInfo> {
    return this.#change(
      async () => {
        if (this.#d.table.entries.length >= MAX_SNAPSHOTS) {
          // qemu-img's words for QEMU's limit of 65536 (EFBIG).
          throw new VdiskError('EINVAL', '-27 (File too large)');
        }
        await checkAddable(this.#d.tables.l1Copy(), this.#d);
      },
      async (settle) => {
        const { tables, header, table } = this.#d;
        const active = tables.l1Copy();
        await updateActiveFlags('clear', this.#d);
        await this.#flush();
        try {
          await addReferences(active, this.#d);
        } catch (err) {
          // Every reference added was taken back: the flags follow the refcounts again.
          await updateActiveFlags('exact', this.#d);
          await settle();
          throw err;
        }
        const created: Qcow2Snapshot = {
          // The table as it was, flags and all, as QEMU copies it (flags mean nothing outside
          // the active table): the file comes out as qemu-img's would.
          l1TableOffset: await this.#writeTableCopy(active, 'snapshot-l1'),
          l1Size: active.length / 8,
          id: nextSnapshotId(table.entries),
          name: snapshot.name,
          dateSec: snapshot.dateSec,
          dateNsec: snapshot.dateNsec,
          vmClockNs: snapshot.vmClockNs ?? 0n,
          vmStateSize: 0,
          diskSize: header.header.size,
          icount: snapshot.icount ?? 0n,
          unknownExtra: Buffer.alloc(0),
          extraDataSize: 24,
        };
        await this.#flush();
        await table.replace([...table.entries, created]);
        return snapshotInfo(created);
      },
    );
  }

  /**
   * Makes the image's content the snapshot's, and its virtual size the snapshot's disk size
   * (qemu-img snapshot -a, by id or name). The snapshot stays.
   */
  apply(idOrName: string): Promise<void> {
    const { tables, header, allocator, geometry: g } = this.#d;
    let snapshot: Qcow2Snapshot | undefined;
    let source: Buffer = Buffer.alloc(0);
    let old: Buffer = Buffer.alloc(0);
    return this.#change(
      async () => {
        snapshot = this.#d.table.entries[findSnapshot(this.#d.table.entries, { idOrName })];
        if (!snapshot) throw new VdiskError('ENOENT', 'Failed to load snapshot: No such file or directory');
        if (header.header.version < 3 && snapshot.diskSize !== header.header.size) {
          throw new VdiskError('ENOTSUP', "Can't resize a v2 image which has snapshots");
        }
        source = await this.#readL1(snapshot);
        old = tables.l1Copy();
        await checkAddable(source, this.#d);
        await checkDroppable(old, this.#d);
      },
      async (settle) => {
        const size = snapshot!.diskSize;
        await addReferences(source, this.#d).catch(async (err) => {
          await settle(); // every reference added was taken back
          throw err;
        });
        const entries = Math.max(source.length / 8, old.length / 8, Math.ceil(size / g.l2Coverage));
        const next = Buffer.alloc(entries * 8);
        (await withCopiedFlags(source, 'clear', this.#d)).copy(next);
        const offset = await this.#writeTableCopy(next, 'l1');
        await this.#flush();
        const replaced = await tables.switchL1(offset, next, size);
        // The header no longer names the old table (durable): its references can go (R4).
        const freed = await dropReferences(old, this.#d);
        await allocator.free(replaced.offset, Math.ceil(replaced.bytes / g.clusterSize));
        await this.#flush();
        await updateActiveFlags('exact', this.#d);
        await this.#giveBack(freed);
      },
    );
  }

  /** Removes the first snapshot called `name` and frees what only it used (qemu-img snapshot -d). */
  delete(name: string): Promise<void> {
    const { table, writer, allocator, geometry: g } = this.#d;
    let index = -1;
    let l1: Buffer = Buffer.alloc(0);
    return this.#change(
      async () => {
        index = table.entries.findIndex((s) => s.name === name);
        const snapshot = table.entries[index];
        if (!snapshot) throw new VdiskError('ENOENT', 'snapshot not found');
        l1 = await this.#readL1(snapshot);
        await checkDroppable(l1, this.#d);
      },
      async () => {
        const snapshot = table.entries[index]!;
        await table.replace(table.entries.filter((_, i) => i !== index));
        // The table no longer names the snapshot (durable): its references can go (R4).
        const freed = await dropReferences(l1, this.#d);
        if (l1.length > 0) {
          const clusters = Math.ceil(l1.length / g.clusterSize);
          writer.release('snapshot-l1', snapshot.l1TableOffset, l1.length);
          await allocator.free(snapshot.l1TableOffset, clusters);
          for (let c = 0; c < clusters; c++) freed.push(snapshot.l1TableOffset + c * g.clusterSize);
        }
        await this.#flush();
        await updateActiveFlags('exact', this.#d);
        await this.#giveBack(freed);
      },
    );
  }

  /**
   * Runs one operation under the metadata lock: `prepare` finds and checks what it needs and
   * changes nothing; `run` changes the image between a set and a cleared dirty bit. A `run`
   * that undid its own changes calls `settle` before it throws, so the bit is cleared anyway.
   */
  #change<T>(prepare: () => Promise<void>, run: (settle: () => Promise<void>) => Promise<T>): Promise<T> {
    return this.#d.metadataLock.run(async () => {
      await prepare();
      const header = this.#d.header;
      await this.#d.beforeChange();
      await this.#flush();
      const wasDirty = header.dirty;
      await header.setIncompatible(INCOMPAT_DIRTY, true);
      const settle = async () => {
        await this.#flush();
        // With lazy refcounts the dirty bit stays until the image is closed cleanly.
        if (!wasDirty && !header.lazyRefcounts) await header.setIncompatible(INCOMPAT_DIRTY, false);
      };
      const result = await run(settle);
      await settle();
      return result;
    });
  }

  /** Writes every changed table, then makes the file durable (R6). */
  async #flush(): Promise<void> {
    await this.#d.tables.writeBack();
    await this.#d.refcounts.writeBack();
    await this.#d.file.flush();
  }

  /** Writes an L1 table at newly allocated clusters (its refcount durable first, R1); returns where. */
  async #writeTableCopy(table: Buffer, kind: 'l1' | 'snapshot-l1'): Promise<number> {
    if (table.length === 0) return 0;
    const { allocator, writer, geometry: g } = this.#d;
    const offset = await allocator.allocate(Math.ceil(table.length / g.clusterSize));
    await allocator.flushRefcounts();
    writer.claim(kind, offset, table.length);
    await writer.writeTable(kind, offset, table);
    return offset;
  }

  async #readL1(snapshot: Qcow2Snapshot): Promise<Buffer> {
    validateSnapshotL1(snapshot, this.#d.geometry.clusterSize);
    const l1 = Buffer.alloc(snapshot.l1Size * 8);
    if (snapshot.l1TableOffset + l1.length > this.#d.file.length()) {
      throw new VdiskError('ECORRUPT', `The L1 table of snapshot '${snapshot.name}' lies past the end of the file`);
    }
    await this.#d.file.read(snapshot.l1TableOffset, l1);
    return l1;
  }

  /**
   * Gives the host the space of clusters nothing references any more, as QEMU discards what a
   * snapshot operation frees (durable refcounts first: R4).
   */
  async #giveBack(clusters: number[]): Promise<void> {
    await this.#flush();
    const cs = this.#d.geometry.clusterSize;
    for (const offset of clusters) {
      if ((await this.#d.allocator.refcountOf(offset)) === 0) await this.#d.file.discard(offset, cs);
    }
  }
}

/** A snapshot as info and snapshot -l show it. */
export function snapshotInfo(s: Qcow2Snapshot): SnapshotInfo {
  return {
    id: s.id,
    name: s.name,
    vmStateSize: s.vmStateSize,
    dateSec: s.dateSec,
    dateNsec: s.dateNsec,
    vmClockNsec: Number(s.vmClockNs),
    icount: s.icount === undefined ? undefined : Number(s.icount),
  };
}
