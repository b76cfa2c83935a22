/** Reading guest bytes: one host read per contiguous data run, zeros, backing data, or inflated clusters. */
import { inflateRawSync } from 'node:zlib';
import { VdiskError } from '../../../block/errors.js';
import type { L2Entry } from '../codec/l2-entry.js';
import { mapRange, mapRangeCached, type Run } from './mapping.js';
import type { ImageParts } from './parts.js';

/** Fills `buf` with the guest bytes at `offset`. The caller holds the clusters shared. */
export async function readGuest(parts: ImageParts, offset: number, buf: Buffer): Promise<void> {
  // Mappings in cached tables need no lock: the clusters are held, and the lookup ends before
  // anything else runs. Only loading a table waits for the metadata lock.
  const runs =
    mapRangeCached(parts.tables, parts.geometry, offset, buf.length) ??
    (await parts.metadataLock.run(() => mapRange(parts.tables, parts.geometry, offset, buf.length)));
  if (runs.length === 1) return readRun(parts, runs[0]!, buf);
  await Promise.all(
    runs.map((run) => readRun(parts, run, buf.subarray(run.offset - offset, run.offset - offset + run.length))),
  );
}

export async function readRun(parts: ImageParts, run: Run, out: Buffer): Promise<void> {
  switch (run.kind) {
    case 'data':
      await readHost(parts, run.host, out);
      return;
    case 'zero':
      out.fill(0);
      return;
    case 'unallocated':
      await readBacking(parts, run.offset, out);
      return;
    case 'compressed': {
      const cluster = await readCompressed(parts, run.entry!);
      const start = run.offset % parts.geometry.clusterSize;
      cluster.copy(out, 0, start, start + out.length);
      return;
    }
  }
}

/**
 * Reads host bytes of a data cluster. The part past the end of the file reads as zeros, as
 * QEMU reads it, without asking the file for bytes it does not have (an entry pointing past
 * the end is a corruption check reports; reading must not fail or go outside the file).
 */
export async function readHost(parts: ImageParts, host: number, out: Buffer): Promise<void> {
  const inFile = Math.max(0, Math.min(out.length, parts.file.length() - host));
  if (inFile > 0) await parts.file.read(host, out.subarray(0, inFile));
  out.fill(0, inFile);
}

/** Reads what the backing image has at `offset`; zeros past its end or without one. */
export async function readBacking(parts: ImageParts, offset: number, out: Buffer): Promise<void> {
  const backing = parts.backing;
  const inBacking = backing ? Math.max(0, Math.min(out.length, backing.length() - offset)) : 0;
  if (inBacking > 0) await backing!.read(offset, out.subarray(0, inBacking));
  out.fill(0, inBacking);
}

/** The whole guest cluster a compressed entry describes. */
export async function readCompressed(parts: ImageParts, entry: L2Entry): Promise<Buffer> {
  if (entry.kind !== 'compressed') throw new VdiskError('EIO', 'Not a compressed cluster');
  const clusterSize = parts.geometry.clusterSize;
  const available = Math.min(entry.length, parts.file.length() - entry.host);
  if (available <= 0) {
    throw new VdiskError(
      'ECORRUPT',
      `Compressed cluster at 0x${entry.host.toString(16)} lies past the end of the file`,
    );
  }
  const compressed = Buffer.allocUnsafe(available);
  await parts.file.read(entry.host, compressed);
  let plain: Buffer;
  try {
    // The stored length is rounded up to sectors, so trailing bytes after the stream are normal.
    plain = inflateRawSync(compressed, { finishFlush: 2 /* Z_SYNC_FLUSH */, maxOutputLength: clusterSize });
  } catch (err) {
    throw new VdiskError('ECORRUPT', `Compressed cluster at 0x${entry.host.toString(16)} does not decompress`, {
      cause: err,
    });
  }
  if (plain.length !== clusterSize) {
    throw new VdiskError(
      'ECORRUPT',
      `Compressed cluster at 0x${entry.host.toString(16)} decompresses to ${plain.length} bytes, not ${clusterSize}`,
    );
  }
  return plain;
}
