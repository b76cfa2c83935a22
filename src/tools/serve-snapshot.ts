/**
 * `serve -s` (qemu-nbd --snapshot): the image is served through a temporary qcow2 overlay whose
 * backing file is the image. Clients' writes land in the overlay; the image itself is opened
 * read-only and never changes. The overlay's name is removed as soon as it is open, so it goes
 * away with the server however the server ends.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { createImage } from './create.js';

export interface SnapshotOverlay {
  /** The overlay's file name, until remove() (call it once the overlay is open). */
  readonly filename: string;
  /** The format of the image under the overlay (given, or probed). */
  readonly baseFormat: FormatName;
  remove(): Promise<void>;
}

/** Creates the overlay for `filename` in the temporary directory (TMPDIR), as qemu-nbd does. */
export async function createSnapshotOverlay(
  filename: string,
  format: FormatName | 'probe',
  options: { forceShare?: boolean } = {},
): Promise<SnapshotOverlay> {
  const base = path.resolve(filename);
  // Opened once to learn its format and size; the server opens it again as the backing file.
  const { backend, format: baseFormat } = await openImageWithFormat(base, {
    format,
    readOnly: true,
    forceShare: options.forceShare,
  });
  const size = backend.length;
  await backend.close();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-snapshot-'));
  const overlay = path.join(dir, 'overlay.qcow2');
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    await createImage({
      filename: overlay,
      format: 'qcow2',
      size,
      options: { backing_file: base, backing_fmt: baseFormat },
    });
  } catch (err) {
    await remove();
    throw err;
  }
  return { filename: overlay, baseFormat, remove };
}
