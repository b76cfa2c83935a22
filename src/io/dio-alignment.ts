/**
 * The request alignment O_DIRECT needs on a regular file: the logical block size of the device
 * under its filesystem (512 or 4096).
 *
 * As QEMU's raw_probe_alignment does, try O_DIRECT reads of 512, 1024, 2048 and 4096 bytes at
 * offset 0 and take the first one the kernel accepts (EINVAL means misaligned). That only
 * proves something when offset 0 holds data: a read of a hole, or past the end, succeeds
 * whatever its alignment. So the sysfs logical block size of the filesystem's device is taken
 * too, and the larger answer wins; with neither, 4096 is always safe.
 */
import fs from 'node:fs';
import { alignedPool } from './aligned.js';
import { native } from './native.js';
import { pread } from './positioned-io.js';
import { errnoCode } from './posix.js';

const CANDIDATES = [512, 1024, 2048, 4096];
const SAFE = 4096;

export async function probeDirectAlignment(fd: number, st: fs.Stats): Promise<number> {
  const probed = (await dataAtStart(fd, st)) ? await probeByRead(fd) : undefined;
  const device = deviceLogicalBlockSize(st.dev);
  if (probed === undefined && device === undefined) return SAFE;
  return Math.max(probed ?? 0, device ?? 0);
}

async function dataAtStart(fd: number, st: fs.Stats): Promise<boolean> {
  if (st.size === 0) return false;
  try {
    return native().seekData(fd, 0) === 0;
  } catch {
    return true; // no SEEK_DATA: the filesystem reports everything as data
  }
}

async function probeByRead(fd: number): Promise<number | undefined> {
  const buf = alignedPool.acquire(SAFE);
  try {
    for (const size of CANDIDATES) {
      try {
        await pread(fd, buf, 0, size, 0);
        return size;
      } catch (err) {
        // Only EINVAL says "misaligned"; any other error (a failing disk) tells nothing.
        if (errnoCode(err) !== 'EINVAL') return undefined;
      }
    }
    return undefined;
  } finally {
    alignedPool.release(buf);
  }
}

/** /sys/dev/block/MAJ:MIN/queue/logical_block_size, or its parent's for a partition. */
function deviceLogicalBlockSize(dev: number): number | undefined {
  const d = BigInt(dev);
  const major = Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn));
  const minor = Number((d & 0xffn) | ((d >> 12n) & ~0xffn));
  for (const rel of ['queue', '../queue']) {
    try {
      const text = fs.readFileSync(`/sys/dev/block/${major}:${minor}/${rel}/logical_block_size`, 'utf8');
      const size = Number.parseInt(text, 10);
      if (CANDIDATES.includes(size)) return size;
    } catch {
      // not a block-device-backed filesystem (tmpfs, NFS, overlay), or no sysfs
    }
  }
  return undefined;
}
