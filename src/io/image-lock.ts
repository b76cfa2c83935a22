/**
 * Image locking compatible with QEMU's file-posix driver, so that vdisk and qemu-img, qemu-io,
 * qemu-nbd and running VMs refuse each other's conflicting opens.
 *
 * QEMU takes shared (F_RDLCK) open-file-description locks on single bytes: byte 100+bit for each
 * permission it holds, byte 200+bit for each permission it does not share with others. After
 * locking, it tests (as for a write lock, so any other holder shows up) byte 200+bit for every
 * permission it wants and byte 100+bit for every permission it refuses to share.
 *
 * Bits (QEMU 7.x): 0 consistent read, 1 write, 2 write unchanged, 3 resize. Observed with
 * strace on qemu-img 7.2: a read-only user (convert source) holds consistent read and shares
 * consistent read and write unchanged; a writer holds consistent read, write and resize.
 * qemu-io shares everything, but its write permission still conflicts with anyone who does
 * not share write.
 */
import { VdiskError } from '../block/errors.js';
import { native } from './native.js';
import { errnoCode } from './posix.js';

const PERM_BASE = 100;
const SHARED_BASE = 200;

const CONSISTENT_READ = 1 << 0;
const WRITE = 1 << 1;
const WRITE_UNCHANGED = 1 << 2;
const RESIZE = 1 << 3;
const PERM_NAMES = ['consistent read', 'write', 'write unchanged', 'resize'];

export interface Permissions {
  /** Bit mask of the permissions held. */
  perm: number;
  /** Bit mask of the permissions other users may hold at the same time. */
  shared: number;
}

/** What vdisk asks for, as qemu-img does without --force-share. */
export function permissionsFor(readOnly: boolean): Permissions {
  return {
    perm: readOnly ? CONSISTENT_READ : CONSISTENT_READ | WRITE | RESIZE,
    shared: CONSISTENT_READ | WRITE_UNCHANGED,
  };
}

/** An unlocked writer could lose a locked writer's data: as in QEMU, force-share is for readers. */
export function forceShareRefused(filename: string): VdiskError {
  return new VdiskError(
    'EINVAL',
    `Could not open '${filename}': force-share (-U) can only be used with read-only images`,
  );
}

function busy(filename: string, what: string): VdiskError {
  return new VdiskError('EBUSY', `${what}: Is another process using the image [${filename}]?`);
}

/**
 * Takes the lock bytes on `fd` and checks for conflicts. Returns false when the filesystem has no
 * OFD locks (QEMU's locking=auto then runs unlocked too); throws EBUSY on a conflict. The caller
 * closes the fd on failure, which drops whatever was taken.
 */
export function acquireImageLock(fd: number, filename: string, { perm, shared }: Permissions): boolean {
  const n = native();
  const bytes: number[] = [];
  for (let bit = 0; bit < PERM_NAMES.length; bit++) if (perm & (1 << bit)) bytes.push(PERM_BASE + bit);
  for (let bit = 0; bit < PERM_NAMES.length; bit++) if (!(shared & (1 << bit))) bytes.push(SHARED_BASE + bit);
  for (const byte of bytes) {
    try {
      n.lock(fd, byte, 1, 'read');
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'EAGAIN' || code === 'EACCES') throw busy(filename, `Failed to lock byte ${byte}`);
      if (code === 'EINVAL' || code === 'ENOLCK' || code === 'EOPNOTSUPP' || code === 'ENOSYS') return false;
      throw err;
    }
  }
  for (let bit = 0; bit < PERM_NAMES.length; bit++) {
    if (perm & (1 << bit) && n.testLock(fd, SHARED_BASE + bit, 1, 'write')) {
      throw busy(filename, `Failed to get "${PERM_NAMES[bit]}" lock`);
    }
  }
  for (let bit = 0; bit < PERM_NAMES.length; bit++) {
    if (!(shared & (1 << bit)) && n.testLock(fd, PERM_BASE + bit, 1, 'write')) {
      throw busy(filename, `Failed to get shared "${PERM_NAMES[bit]}" lock`);
    }
  }
  return true;
}
