/**
 * A new image is built where nobody sees it and gets its name only once it is complete and
 * durable, so a create or convert that fails, runs out of space or is killed leaves either no
 * file or the old one, never a half-made image.
 *
 * The image is built in an unnamed inode (O_TMPFILE) in the target's directory: a killed process
 * leaves nothing at all. On commit the inode is synced, then linked to the target name (or, when
 * a file already has that name, linked to a hidden temporary name and renamed over it), then the
 * directory is synced. Where O_TMPFILE is not available, a hidden temporary file stands in for
 * the inode (removed on failure; a killed process may leave it). A target that exists and is not
 * a regular file (a block device) is written in place, as QEMU does.
 *
 * An existing target is held with a writer's image lock from the start, so a file another
 * process uses (a running VM) is refused before any work is done, and nobody opens it while the
 * new image is built.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { chmod, chown, lstat, open, realpath, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fromSystemError, VdiskError } from '../block/errors.js';
import { acquireImageLock, permissionsFor } from './image-lock.js';
import { native } from './native.js';
import { closeFd, errnoCode, openFd } from './posix.js';

type Opener = (path: string, flags: number, mode: number) => Promise<number>;

const NEW_FILE_MODE = 0o644;

export class StagedFile {
  /** The name the image gets, as the caller gave it. */
  readonly filename: string;
  /** The path that is replaced (symbolic links resolved). */
  readonly #target: string;
  /** The path the image is built at: /proc/self/fd/N, a hidden temporary file, or the target itself. */
  readonly #building: string;
  /** The staged inode (O_TMPFILE), kept open until commit or abort. */
  readonly #inodeFd: number | undefined;
  /** The hidden temporary file, when O_TMPFILE was not available. */
  readonly #tempPath: string | undefined;
  /** The existing target, opened to hold its image lock. */
  readonly #oldFd: number | undefined;
  #done = false;

  private constructor(init: {
    filename: string;
    target: string;
    building: string;
    inodeFd?: number;
    tempPath?: string;
    oldFd?: number;
  }) {
    this.filename = init.filename;
    this.#target = init.target;
    this.#building = init.building;
    this.#inodeFd = init.inodeFd;
    this.#tempPath = init.tempPath;
    this.#oldFd = init.oldFd;
  }

  /** Whether the target is written in place (an existing block device). */
  get inPlace(): boolean {
    return this.#building === this.#target;
  }

  static async begin(filename: string): Promise<StagedFile> {
    const fail = (err: unknown) => fromSystemError(err, `Could not create '${filename}'`);
    const existing = await lstat(filename).catch((err) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw fail(err);
    });
    let target = filename;
    if (existing?.isSymbolicLink()) {
      // Replace the file the link names, not the link. A dangling link is written through.
      const real = await realpath(filename).catch(() => undefined);
      if (real === undefined) return new StagedFile({ filename, target, building: target });
      target = real;
    }
    const current = existing ? await stat(target).catch(() => undefined) : undefined;
    if (current && !current.isFile()) return new StagedFile({ filename, target, building: target });

    let oldFd: number | undefined;
    if (current) {
      oldFd = await openFd(target, fs.constants.O_RDONLY, 0).catch((err) => {
        throw fail(err);
      });
      try {
        acquireImageLock(oldFd, filename, permissionsFor(false));
      } catch (err) {
        await closeFd(oldFd).catch(() => {});
        throw err;
      }
    }
    try {
      const dir = dirname(target);
      try {
        const inodeFd = await openFd(dir, native().O_TMPFILE | fs.constants.O_RDWR, NEW_FILE_MODE);
        return new StagedFile({ filename, target, building: `/proc/self/fd/${inodeFd}`, inodeFd, oldFd });
      } catch (err) {
        if (current && noRoomInDirectory(err)) {
          // A writable file in a directory we may not add to: overwrite it in place, as QEMU does.
          await closeFd(oldFd!);
          return new StagedFile({ filename, target, building: target });
        }
        if (!tmpfileUnsupported(err)) throw fail(err);
      }
      const tempPath = join(dir, hiddenName(target));
      const fd = await openFd(
        tempPath,
        fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL,
        NEW_FILE_MODE,
      );
      await closeFd(fd);
      return new StagedFile({ filename, target, building: tempPath, tempPath, oldFd });
    } catch (err) {
      if (oldFd !== undefined) await closeFd(oldFd).catch(() => {});
      throw err instanceof VdiskError ? err : fail(err);
    }
  }

  /** An open(2) for FileDriver.open: whatever path it is given, it opens the image being built. */
  readonly opener: Opener = (_path, flags, mode) =>
    openFd(this.#building, flags & ~(fs.constants.O_CREAT | fs.constants.O_EXCL), mode);

  /** Syncs the new image, gives it the target's name (replacing an old file), syncs the directory. */
  async commit(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    const fail = (err: unknown) => fromSystemError(err, `Could not create '${this.filename}'`);
    try {
      if (this.inPlace) return;
      await this.#syncBuilt();
      if (this.#oldFd !== undefined) await this.#inheritOwnership(this.#oldFd);
      if (this.#inodeFd !== undefined) {
        let linked = false;
        if (this.#oldFd === undefined) {
          try {
            native().linkFd(this.#inodeFd, this.#target);
            linked = true;
          } catch (err) {
            if (errnoCode(err) !== 'EEXIST') throw err;
          }
        }
        if (!linked) {
          const temp = join(dirname(this.#target), hiddenName(this.#target));
          native().linkFd(this.#inodeFd, temp);
          await rename(temp, this.#target).catch(async (err) => {
            await unlink(temp).catch(() => {});
            throw err;
          });
        }
      } else {
        await rename(this.#tempPath!, this.#target);
      }
      await syncDirectory(dirname(this.#target));
    } catch (err) {
      if (this.#tempPath !== undefined) await unlink(this.#tempPath).catch(() => {});
      throw fail(err);
    } finally {
      await this.#closeAll();
    }
  }

  /** Drops the image being built; an old file of that name stays as it was. Idempotent. */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    if (this.#tempPath !== undefined) await unlink(this.#tempPath).catch(() => {});
    await this.#closeAll();
  }

  async #syncBuilt(): Promise<void> {
    const handle = await open(this.#building, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /** The new file keeps the old one's permissions and owner, as an overwrite in place would. */
  async #inheritOwnership(oldFd: number): Promise<void> {
    const st = await new Promise<fs.Stats>((resolve, reject) =>
      fs.fstat(oldFd, (err, s) => (err ? reject(err) : resolve(s))),
    );
    await chmod(this.#building, st.mode & 0o7777);
    await chown(this.#building, st.uid, st.gid).catch((err) => {
      if (errnoCode(err) !== 'EPERM') throw err;
    });
  }

  async #closeAll(): Promise<void> {
    if (this.#inodeFd !== undefined) await closeFd(this.#inodeFd).catch(() => {});
    if (this.#oldFd !== undefined) await closeFd(this.#oldFd).catch(() => {});
  }
}

function hiddenName(target: string): string {
  return `.${basename(target)}.vdisk-${randomBytes(6).toString('hex')}`;
}

/** O_TMPFILE is refused by filesystems without it (EOPNOTSUPP), old kernels (EISDIR, EINVAL). */
function tmpfileUnsupported(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'EOPNOTSUPP' || code === 'EISDIR' || code === 'EINVAL' || code === 'ENOENT';
}

function noRoomInDirectory(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'EACCES' || code === 'EPERM';
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch (err) {
    // Some filesystems cannot sync a directory; the rename is then as durable as they make it.
    if (errnoCode(err) !== 'EINVAL' && errnoCode(err) !== 'EBADF') throw err;
  } finally {
    await handle.close();
  }
}
