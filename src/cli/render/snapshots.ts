/** The snapshot table as qemu-img prints it (bdrv_snapshot_dump), and its QAPI JSON objects. */
import type { SnapshotInfo } from '../../block/driver.js';
import { formatSize } from '../../tools/size.js';

const NSEC = 1_000_000_000;

/** QEMU's SnapshotInfo, keys in the QAPI schema's order (qemu-json puts them in QDict order). */
export function qemuSnapshotInfo(s: SnapshotInfo): Record<string, unknown> {
  return {
    id: s.id,
    name: s.name,
    'vm-state-size': s.vmStateSize,
    'date-sec': s.dateSec,
    'date-nsec': s.dateNsec,
    'vm-clock-sec': Math.floor(s.vmClockNsec / NSEC),
    'vm-clock-nsec': s.vmClockNsec % NSEC,
    icount: s.icount,
  };
}

const two = (n: number) => String(n).padStart(2, '0');

/** strftime("%Y-%m-%d %H:%M:%S") of a time in seconds, in local time as QEMU prints it. */
function localDate(seconds: number): string {
  const d = new Date(seconds * 1000);
  return (
    `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
  );
}

function vmClock(nsec: number): string {
  const secs = Math.floor(nsec / NSEC);
  const millis = Math.floor(nsec / 1_000_000) % 1000;
  return `${two(Math.floor(secs / 3600))}:${two(Math.floor(secs / 60) % 60)}:${two(secs % 60)}.${String(millis).padStart(3, '0')}`;
}

/** The header line of the table. */
export function snapshotHeader(): string {
  return `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`;
}

/** One snapshot's line. */
export function snapshotLine(s: SnapshotInfo): string {
  return (
    `${s.id.padEnd(9)} ${s.name.padEnd(16)} ${formatSize(s.vmStateSize).padStart(8)}` +
    `${localDate(s.dateSec).padStart(20)}${vmClock(s.vmClockNsec).padStart(13)}` +
    `${(s.icount === undefined ? '' : String(s.icount)).padStart(11)}`
  );
}

/** "Snapshot list:" and the table, as qemu-img info and snapshot -l print it. */
export function formatSnapshotList(snapshots: readonly SnapshotInfo[]): string {
  return `Snapshot list:\n${snapshotHeader()}\n${snapshots.map((s) => `${snapshotLine(s)}\n`).join('')}`;
}
