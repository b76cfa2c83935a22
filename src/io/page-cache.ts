/**
 * Dropping a file's pages from the host page cache, so that the next read of it waits for the
 * storage as a read after a reboot would: its dirty pages are written out first (fdatasync), then
 * posix_fadvise(POSIX_FADV_DONTNEED) drops the clean ones. Neither needs root, and any open file
 * description of the file will do: the page cache belongs to the file, not to the descriptor.
 */
import { open } from 'node:fs/promises';
import { fromSystemError } from '../block/errors.js';
import { native } from './native.js';

export async function evictFromPageCache(filename: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(filename, 'r');
    await handle.datasync();
    native().fadviseDontNeed(handle.fd, 0, 0);
  } catch (err) {
    throw fromSystemError(err, `Could not drop '${filename}' from the page cache`);
  } finally {
    await handle?.close();
  }
}
