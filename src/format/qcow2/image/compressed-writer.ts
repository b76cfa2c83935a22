/**
 * Writing one whole guest cluster compressed (qemu-img convert -c): deflate without a zlib
 * header, packed into host clusters byte by byte. A cluster that does not shrink is written
 * normally instead, as QEMU does.
 */
import { constants, deflateRawSync } from 'node:zlib';
import { VdiskError } from '../../../block/errors.js';
import { compressedSectors, type L2Entry } from '../codec/l2-entry.js';
import { checkHostsOf, freeEntries, writeGuest } from './guest-writer.js';
import type { ImageParts } from './parts.js';

export async function writeCompressedCluster(parts: ImageParts, offset: number, data: Buffer): Promise<void> {
  const g = parts.geometry;
  const size = parts.header.header.size;
  if (offset % g.clusterSize !== 0 || (data.length !== g.clusterSize && offset + data.length !== size)) {
    throw new VdiskError('EINVAL', 'Compressed writes must cover exactly one whole cluster');
  }
  const plain = data.length === g.clusterSize ? data : Buffer.concat([data, Buffer.alloc(g.clusterSize - data.length)]);
  const packed = deflateRawSync(plain, { level: constants.Z_DEFAULT_COMPRESSION, windowBits: 12 });
  // Nothing saved: QEMU writes such a cluster uncompressed too.
  if (packed.length >= g.clusterSize) {
    await writeGuest(parts, offset, data);
    return;
  }
  const cluster = offset / g.clusterSize;
  const release = await parts.clusterLocks.acquire(cluster, cluster + 1, 'exclusive');
  try {
    await checkHostsOf(parts, await parts.metadataLock.run(() => parts.tables.entries(cluster, 1)));
    const host = await parts.metadataLock.run(() => parts.allocator.allocateBytes(packed.length));
    await parts.writer.check('data', host, packed.length);
    await parts.file.write(host, packed);
    await parts.metadataLock.run(async () => {
      // R3: the compressed bytes are durable before the L2 entry names them.
      parts.l2Cache.dependOnFileFlush();
      const [old] = await parts.tables.entries(cluster, 1);
      const entry: L2Entry = {
        kind: 'compressed',
        host,
        sectors: compressedSectors(host, packed.length),
        length: packed.length,
      };
      await parts.tables.setEntries(cluster, [entry]);
      if (old && old.kind !== 'unallocated') await freeEntries(parts, [old]);
    });
  } finally {
    release();
  }
}
