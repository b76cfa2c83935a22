/**
 * Creating a qcow2 image as qemu-img 7.2 does: the layout planner says where every table goes
 * (it replays QEMU's allocator), and this module writes them. With preallocation the data area
 * is reserved (falloc) or written with zeros (full) before the tables that map it.
 */
import { VdiskError } from '../../../block/errors.js';
import {
  type CreateOptionDesc,
  type CreateRequest,
  type CreateSpec,
  type CreateTarget,
  type FormatCreator,
  SIZE_OPTION,
} from '../../create-options.js';
import { COMPRESSION_ZLIB, COMPRESSION_ZSTD } from '../codec/constants.js';
import { encodeHeaderCluster } from '../codec/header.js';
import { encodeL1 } from '../codec/l1-entry.js';
import { encodeL2 } from '../codec/l2-entry.js';
import { encodeReftableEntry, setRefcount } from '../codec/refcount-block.js';
import { type CreateLayout, type CreatePreallocation, planCreateLayout } from './layout.js';

/** In the order qemu-img prints them in its "Formatting …" line. */
export const QCOW2_CREATE_OPTIONS: readonly CreateOptionDesc[] = [
  { name: 'cluster_size', type: 'size', help: 'qcow2 cluster size', defaultValue: '65536' },
  { name: 'extended_l2', type: 'bool', help: 'Extended L2 tables', defaultValue: 'off' },
  {
    name: 'preallocation',
    type: 'str',
    help: 'Preallocation mode (allowed values: off, metadata, falloc, full)',
    values: ['off', 'metadata', 'falloc', 'full'],
  },
  {
    name: 'compression_type',
    type: 'str',
    help: 'Compression method used for image cluster compression',
    values: ['zlib', 'zstd'],
    defaultValue: 'zlib',
  },
  SIZE_OPTION,
  { name: 'backing_file', type: 'str', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'str', help: 'Image format of the base image' },
  { name: 'data_file', type: 'str', help: 'File name of an external data file (not supported)' },
  {
    name: 'compat',
    type: 'str',
    help: 'Compatibility level (v2 [0.10] or v3 [1.1])',
    values: ['0.10', '1.1', 'v2', 'v3'],
  },
  { name: 'lazy_refcounts', type: 'bool', help: 'Postpone refcount updates', defaultValue: 'off' },
  { name: 'refcount_bits', type: 'num', help: 'Width of a reference count entry in bits', defaultValue: '16' },
];

interface Qcow2CreateSettings {
  version: 2 | 3;
  clusterBits: number;
  refcountOrder: number;
  extendedL2: boolean;
  lazyRefcounts: boolean;
  compressionType: number;
  preallocation: CreatePreallocation;
  backingFile?: string;
  backingFormat?: string;
}

export function settingsOf(request: CreateSpec): Qcow2CreateSettings {
  const o = request.options;
  if (o.data_file !== undefined) throw new VdiskError('ENOTSUP', 'External data files are not supported');
  const clusterSize = Number(o.cluster_size ?? 65536);
  const clusterBits = Math.log2(clusterSize);
  if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 21) {
    throw new VdiskError('EINVAL', 'Cluster size must be a power of two between 512 and 2048k');
  }
  const refcountBits = Number(o.refcount_bits ?? 16);
  const refcountOrder = Math.log2(refcountBits);
  if (!Number.isInteger(refcountOrder) || refcountOrder < 0 || refcountOrder > 6) {
    throw new VdiskError('EINVAL', 'Refcount width must be a power of two and may not exceed 64 bits');
  }
  const compat = String(o.compat ?? '1.1');
  const version = compat === '0.10' || compat === 'v2' ? 2 : 3;
  const backingFile = o.backing_file === undefined ? undefined : String(o.backing_file);
  const backingFormat = o.backing_fmt === undefined ? undefined : String(o.backing_fmt);
  if (backingFile !== undefined && backingFormat === undefined) {
    throw new VdiskError('EINVAL', 'Backing file specified without backing format');
  }
  if (backingFormat !== undefined && backingFile === undefined) {
    throw new VdiskError('EINVAL', 'Backing format specified without a backing file');
  }
  const preallocation = (o.preallocation ?? 'off') as CreatePreallocation;
  if (backingFile !== undefined && preallocation !== 'off') {
    throw new VdiskError(
      'EINVAL',
      'Backing file and preallocation can only be used at the same time if extended_l2 is on (vdisk: use preallocation=off)',
    );
  }
  return {
    version,
    clusterBits,
    refcountOrder,
    extendedL2: o.extended_l2 === true,
    lazyRefcounts: o.lazy_refcounts === true,
    compressionType: o.compression_type === 'zstd' ? COMPRESSION_ZSTD : COMPRESSION_ZLIB,
    preallocation,
    backingFile,
    backingFormat,
  };
}

function layoutOf(size: number, s: Qcow2CreateSettings): CreateLayout {
  return planCreateLayout({
    // qemu-img rounds the virtual size up to whole sectors.
    size: Math.ceil(size / 512) * 512,
    clusterBits: s.clusterBits,
    refcountOrder: s.refcountOrder,
    version: s.version,
    extendedL2: s.extendedL2,
    lazyRefcounts: s.lazyRefcounts,
    compressionType: s.compressionType,
    preallocation: s.preallocation,
    hasBackingFile: s.backingFile !== undefined,
  });
}

async function createQcow2(request: CreateRequest): Promise<void> {
  const s = settingsOf(request);
  let size = request.size;
  if (s.backingFile !== undefined && request.backingSize) {
    // The backing image must open (and gives the size when none was asked for), unless -u.
    const fromBacking = await request.backingSize(s.backingFile, s.backingFormat!).catch((err) => {
      throw new VdiskError(err.code ?? 'EIO', `${err.message}\nCould not open backing image.`, { cause: err });
    });
    if (size < 0 || Number.isNaN(size)) size = fromBacking;
  }
  if (size < 0 || Number.isNaN(size)) throw new VdiskError('EINVAL', 'Image creation needs a size parameter');
  const layout = layoutOf(size, s);
  const file = await request.openTarget();
  try {
    await file.truncate(0, 'off');
    await writeLayout(file, layout, s, request);
    await file.flush();
  } finally {
    await file.close();
  }
}

async function writeLayout(
  file: CreateTarget,
  layout: CreateLayout,
  s: Qcow2CreateSettings,
  request: CreateRequest,
): Promise<void> {
  const g = layout.geometry;
  const cs = g.clusterSize;
  const h = layout.header;

  // The data area first, so full preallocation writes zeros only where no table will go.
  const data = layout.preallocatedData;
  if (data && (s.preallocation === 'falloc' || s.preallocation === 'full')) {
    await file.truncate(data.offset, 'off');
    await file.truncateWithProgress(data.offset + data.length, s.preallocation, request.onProgress);
  }
  for (const t of layout.staleRefcountTables) {
    const old = Buffer.alloc(t.entries.length * 8);
    for (const [i, off] of t.entries.entries()) encodeReftableEntry(old, i, off, cs);
    await file.write(t.offset, old);
  }
  for (const z of layout.zeroedRanges) await file.write(z.offset, Buffer.alloc(z.length));
  await file.write(0, encodeHeaderCluster(h, { backingFile: s.backingFile, backingFormat: s.backingFormat }));

  const reftable = Buffer.alloc(h.refcountTableClusters * cs);
  for (const [i, blockOffset] of layout.refcountTable.entries()) {
    if (!blockOffset) continue;
    encodeReftableEntry(reftable, i, blockOffset, cs);
    const block = Buffer.alloc(cs);
    const first = i * g.refcountBlockEntries;
    const last = first + g.refcountBlockEntries;
    for (const r of layout.allocated) {
      const end = Math.min(last, (r.offset + r.length) / cs);
      for (let c = Math.max(first, r.offset / cs); c < end; c++) setRefcount(block, c - first, g.refcountOrder, 1);
    }
    await file.write(blockOffset, block);
  }
  await file.write(h.refcountTableOffset, reftable);

  // L2 tables, one at a time: the data runs are in guest order.
  const l1 = Buffer.alloc(h.l1Size * 8);
  const tableAt = new Map(layout.l2Tables.map((t) => [t.l1Index, t.offset]));
  let current: { l1Index: number; buf: Buffer } | undefined;
  const finish = async () => {
    if (!current) return;
    await file.write(tableAt.get(current.l1Index)!, current.buf);
    current = undefined;
  };
  for (const t of layout.l2Tables) encodeL1(l1, t.l1Index, { l2Offset: t.offset, copied: true }, g);
  for (const run of layout.dataRuns) {
    for (let o = 0; o < run.length; o += cs) {
      const guest = run.guestOffset + o;
      const l1Index = Math.floor(guest / g.l2Coverage);
      if (current?.l1Index !== l1Index) {
        await finish();
        current = { l1Index, buf: Buffer.alloc(cs) };
      }
      const sub = g.extendedL2 ? { sub: { alloc: 0, zero: 0 } } : {};
      encodeL2(
        current.buf,
        Math.floor(guest / cs) % g.l2Entries,
        { kind: 'data', host: run.hostOffset + o, copied: true, ...sub },
        g,
      );
    }
  }
  await finish();
  if (h.l1Size > 0) await file.write(h.l1TableOffset, l1);
  if (file.length() < layout.fileLength) await file.truncate(layout.fileLength, 'off');
}

export const qcow2Creator: FormatCreator = {
  options: QCOW2_CREATE_OPTIONS,
  validate(request) {
    const s = settingsOf(request);
    if (request.size >= 0 && s.backingFile === undefined) layoutOf(request.size, s);
  },
  create: createQcow2,
};
