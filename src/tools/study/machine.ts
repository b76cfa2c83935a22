/**
 * What the study ran on: the machine (OS, kernel, CPUs, memory, Node, vdisk) and the filesystem
 * holding the images (type from /proc/mounts, else from statfs's magic number; the device and
 * whether the kernel calls it rotational).
 */
import { readFileSync } from 'node:fs';
import { readFile, realpath, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface MachineInfo {
  os: string;
  kernel: string;
  kernelVersion: string;
  arch: string;
  cpus: number;
  cpuModel: string;
  memoryBytes: number;
  node: string;
  vdisk: string;
  /** libuv's I/O path: io_uring when UV_USE_IO_URING=1 was set before Node started. */
  uvUseIoUring: string | null;
  uvThreadpoolSize: string | null;
}

/** The host's 1, 5 and 15-minute load averages when the study started and ended. */
export interface LoadInfo {
  start: number[];
  end: number[];
}

/**
 * A warning when other work competed with the study: a 1-minute load average at or above half
 * the CPUs (at least 1) at its start or end. Null when the machine looked quiet.
 */
export function busyNote(load: LoadInfo, cpus: number, rounds: number): string | null {
  const worst = Math.max(load.start[0] ?? 0, load.end[0] ?? 0);
  if (worst < Math.max(1, cpus / 2)) return null;
  return (
    `The machine was busy (load average ${worst.toFixed(1)} on ${cpus} CPUs): other work shared the disk and ` +
    'the CPUs, so single figures are noisy. Trust large ratios only; run again when it is quiet' +
    (rounds > 1 ? '.' : ', or with --full (three rounds, medians).')
  );
}

export interface FilesystemInfo {
  /** Where the images were made. */
  dir: string;
  /** ext4, xfs, btrfs, tmpfs, … */
  type: string;
  mountPoint: string | null;
  device: string | null;
  mountOptions: string | null;
  /** statfs: block size, size and free bytes. */
  blockSize: number | null;
  sizeBytes: number | null;
  freeBytes: number | null;
  /** From /sys/block/<disk>/queue/rotational: true for a spinning disk; null when unknown. */
  rotational: boolean | null;
}

/** vdisk's version from package.json (src/tools/study or dist/src/tools/study). */
export function vdiskVersion(): string {
  for (const up of ['../../../package.json', '../../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'vdisk' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return 'unknown';
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    os: `${os.type()} ${os.platform()}`,
    kernel: os.release(),
    kernelVersion: os.version(),
    arch: os.arch(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryBytes: os.totalmem(),
    node: process.version,
    vdisk: vdiskVersion(),
    uvUseIoUring: process.env.UV_USE_IO_URING ?? null,
    uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? null,
  };
}

/** statfs f_type values of common filesystems, for systems without /proc/mounts. */
const FS_MAGIC: Record<number, string> = {
  61267: 'ext4',
  1481003842: 'xfs',
  2435016766: 'btrfs',
  16914836: 'tmpfs',
  801189825: 'zfs',
  26985: 'nfs',
  2035054128: 'overlay',
  4076150800: 'f2fs',
  1702057286: 'fuse',
  1397118030: 'ntfs',
  19780: 'vfat',
};

/** Undoes the octal escapes of /proc/mounts ("\040" for a space). */
function unescapeMount(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

interface MountEntry {
  device: string;
  mountPoint: string;
  type: string;
  options: string;
}

async function mountOf(dir: string): Promise<MountEntry | undefined> {
  let text: string;
  try {
    text = await readFile('/proc/mounts', 'utf8');
  } catch {
    return undefined;
  }
  let best: MountEntry | undefined;
  for (const line of text.split('\n')) {
    const [device, mountPoint, type, options] = line.split(' ');
    if (!device || !mountPoint || !type) continue;
    const point = unescapeMount(mountPoint);
    const inside = point === '/' || dir === point || dir.startsWith(`${point}/`);
    // The longest matching mount point wins; a later line for the same point shadows an earlier one.
    if (inside && (!best || point.length >= best.mountPoint.length)) {
      best = { device: unescapeMount(device), mountPoint: point, type, options: options ?? '' };
    }
  }
  return best;
}

async function rotational(device: string): Promise<boolean | null> {
  if (!device.startsWith('/dev/')) return null;
  let name = path.basename(device);
  try {
    name = path.basename(await realpath(device));
  } catch {
    // keep the name as written
  }
  // A partition's queue is its disk's: sda1 -> sda, nvme0n1p2 -> nvme0n1, vda1 -> vda.
  for (const candidate of [name, name.replace(/p?\d+$/, '')]) {
    try {
      return (await readFile(`/sys/block/${candidate}/queue/rotational`, 'utf8')).trim() === '1';
    } catch {
      // try the next candidate
    }
  }
  return null;
}

export async function filesystemInfo(dir: string): Promise<FilesystemInfo> {
  const real = await realpath(dir).catch(() => path.resolve(dir));
  const mount = await mountOf(real);
  let stats: { type: number; bsize: number; blocks: number; bavail: number } | undefined;
  try {
    stats = await statfs(real);
  } catch {
    stats = undefined;
  }
  const magic = stats ? FS_MAGIC[stats.type] : undefined;
  return {
    dir: real,
    type: mount?.type ?? magic ?? (stats ? `0x${stats.type.toString(16)}` : 'unknown'),
    mountPoint: mount?.mountPoint ?? null,
    device: mount?.device ?? null,
    mountOptions: mount?.options ?? null,
    blockSize: stats?.bsize ?? null,
    sizeBytes: stats ? stats.blocks * stats.bsize : null,
    freeBytes: stats ? stats.bavail * stats.bsize : null,
    rotational: mount ? await rotational(mount.device) : null,
  };
}
