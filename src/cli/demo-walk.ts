/**
 * `vdisk demo`: the whole path once, on a throwaway image. It creates a raw image with the chosen
 * preallocation in a fresh temporary directory, writes a pattern at a few offsets through a
 * BlockBackend, flushes, closes, reopens the image read-only, checks every byte that was
 * written (and a range that was not), shows the image's info and map, and removes the directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fromSystemError, VdiskError } from '../block/errors.js';
import type { Preallocation } from '../block/preallocation.js';
import { openImage } from '../engine/open.js';
import { createImage } from '../tools/create.js';
import { imageInfo } from '../tools/info.js';
import { mapImage } from '../tools/map.js';
import { formatSize, parseSize } from '../tools/size.js';
import { formatInfoHuman } from './render/info.js';
import { formatMapHuman } from './render/map.js';

export interface DemoOptions {
  /** Preallocation of the new image: off, falloc (default) or full. */
  prealloc?: Preallocation;
  /** Virtual size in bytes or as a size text; default 64M. */
  size?: number | string;
  /** Where the temporary directory is made; default the system's (os.tmpdir()). */
  dir?: string;
  /** Narration, one line at a time. Default: process.stdout. */
  out?: (text: string) => void;
  /** Keep the temporary directory (for inspection). */
  keep?: boolean;
}

export interface DemoWrite {
  offset: number;
  length: number;
  pattern: number;
}

export interface DemoResult {
  dir: string;
  image: string;
  size: number;
  prealloc: Preallocation;
  writes: DemoWrite[];
}

const MIN_SIZE = 4096;
const WRITE_LENGTH = 64 * 1024;

/** Where the demo writes: the start, the middle, and the very end of the image. */
export function demoWrites(size: number): DemoWrite[] {
  const length = Math.min(WRITE_LENGTH, Math.floor(size / 4 / 512) * 512 || 512);
  const middle = Math.floor(size / 2 / 4096) * 4096;
  const candidates: DemoWrite[] = [
    { offset: 0, length, pattern: 0xa5 },
    { offset: middle, length, pattern: 0x5a },
    { offset: size - length, length, pattern: 0xc3 },
  ];
  // On small images the ranges may overlap; keep the ones that do not.
  const writes: DemoWrite[] = [];
  for (const w of candidates) {
    if (w.offset < 0 || w.offset + w.length > size) continue;
    if (writes.some((o) => w.offset < o.offset + o.length && o.offset < w.offset + w.length)) continue;
    writes.push(w);
  }
  return writes;
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const out = options.out ?? ((text: string) => process.stdout.write(text));
  const prealloc = options.prealloc ?? 'falloc';
  if (prealloc === 'metadata') {
    throw new VdiskError(
      'EINVAL',
      'Unsupported preallocation mode for a raw image: metadata (use off, falloc or full)',
    );
  }
  const size = parseSize(options.size ?? '64M');
  if (size < MIN_SIZE) throw new VdiskError('EINVAL', `The demo needs an image of at least ${formatSize(MIN_SIZE)}`);
  const parent = options.dir ?? os.tmpdir();
  let dir: string;
  try {
    dir = await mkdtemp(path.join(parent, 'vdisk-demo-'));
  } catch (err) {
    throw fromSystemError(err, `Could not create a temporary directory in '${parent}'`);
  }
  const image = path.join(dir, 'demo.img');
  let writes: DemoWrite[] = [];
  try {
    const plan = await createImage({ filename: image, format: 'raw', size, options: { preallocation: prealloc } });
    out(`${plan.summary}\n`);

    const backend = await openImage(image, { format: 'raw', cache: 'writeback' });
    try {
      // The image may be a little longer than asked: raw images are whole 512-byte sectors.
      writes = demoWrites(backend.length);
      for (const w of writes) {
        await backend.write(w.offset, Buffer.alloc(w.length, w.pattern));
        out(`wrote ${w.length} bytes of 0x${w.pattern.toString(16)} at offset ${w.offset}\n`);
      }
      await backend.flush();
      out('flushed\n');
    } finally {
      await backend.close();
    }

    const reopened = await openImage(image, { format: 'raw', readOnly: true });
    try {
      for (const w of writes) {
        const data = await reopened.read(w.offset, w.length);
        const bad = data.findIndex((b) => b !== w.pattern);
        if (bad >= 0) {
          throw new VdiskError(
            'EIO',
            `Pattern verification failed after reopening: byte ${w.offset + bad} is 0x${data[bad]!.toString(16)}, expected 0x${w.pattern.toString(16)}`,
          );
        }
      }
      const gapStart = writes[0]!.offset + writes[0]!.length;
      const gapLength = Math.min(WRITE_LENGTH, (writes[1]?.offset ?? reopened.length) - gapStart);
      if (gapLength > 0) {
        const gap = await reopened.read(gapStart, gapLength);
        const bad = gap.findIndex((b) => b !== 0);
        if (bad >= 0) {
          throw new VdiskError(
            'EIO',
            `Verification failed after reopening: byte ${gapStart + bad} was never written but is not zero`,
          );
        }
      }
      out(`reopened and verified ${writes.length} patterns and ${gapLength} untouched bytes\n\n`);
      out(formatInfoHuman({ ...(await imageInfo(reopened)), filename: image }));
      out('\n');
      out(formatMapHuman(await mapImage(reopened)));
    } finally {
      await reopened.close();
    }
    return { dir, image, size, prealloc, writes };
  } finally {
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  }
}
