/**
 * vdisk's public API. Open an image with openImage() and read, write, flush and close it through
 * the returned BlockBackend; make, inspect, check, map, convert, compare, resize, commit, rebase,
 * amend, measure and serve images, manage their internal snapshots and persistent dirty bitmaps,
 * with the functions below. Every failure is a VdiskError with a stable `code`.
 * docs/api.md shows them at work.
 */

export type {
  BackendCounters,
  BackendOptions,
  BackingLayer,
  ImageDescription,
} from './block/backend.js';
export { BlockBackend } from './block/backend.js';
export type { CacheMode, CacheModeName } from './block/cache-mode.js';
export { CACHE_MODE_NAMES } from './block/cache-mode.js';
export type {
  Alignment,
  BitmapInfo,
  BlockDriver,
  DirtyBitmapView,
  DirtyRun,
  DriverCapabilities,
  Extent,
  NodeDescription,
  PersistentBitmaps,
  SnapshotInfo,
  WriteFlags,
  ZeroFlags,
} from './block/driver.js';
export type { ErrorCode } from './block/errors.js';
export { ERROR_CODES, isVdiskError, VdiskError } from './block/errors.js';
export type { Preallocation } from './block/preallocation.js';
export { PREALLOCATIONS } from './block/preallocation.js';
export type { OpenImageOptions } from './engine/open.js';
export { openImage } from './engine/open.js';
export type { FormatName, MeasureResult, RepairMode, SnapshotRef } from './format/format.js';
export { FORMAT_NAMES } from './format/format.js';
export { MemoryDriver } from './io/memory.js';
export type { AmendOptions } from './tools/amend.js';
export { amendImage } from './tools/amend.js';
export type { BitmapAction, BitmapOptions } from './tools/bitmap.js';
export { changeBitmap } from './tools/bitmap.js';
export type { CommitOptions } from './tools/chain/commit.js';
export { commitImage } from './tools/chain/commit.js';
export type { RebaseOptions } from './tools/chain/rebase.js';
export { rebaseImage } from './tools/chain/rebase.js';
export type { CheckImageOptions, CheckOutcome, CheckReport } from './tools/check.js';
export { checkExitCode, checkImage } from './tools/check.js';
export type { CompareOptions, CompareResult } from './tools/compare.js';
export { compareImages } from './tools/compare.js';
export type { ConvertOptions } from './tools/convert.js';
export { convertImage } from './tools/convert.js';
export type { CreatedImage, CreateImageOptions } from './tools/create.js';
export { createImage } from './tools/create.js';
export type { ImageSource } from './tools/image-source.js';
export type { ImageInfo, ImageInfoOptions } from './tools/info.js';
export { imageChainInfo, imageInfo } from './tools/info.js';
export type { MapEntry, MapOptions } from './tools/map.js';
export { mapImage } from './tools/map.js';
export type { MeasureOptions } from './tools/measure.js';
export { measureImage } from './tools/measure.js';
export type { ResizeOptions } from './tools/resize.js';
export { resizeImage } from './tools/resize.js';
export type { ServeHandle, ServeOptions } from './tools/serve.js';
export { serveImage } from './tools/serve.js';
export type { SnapshotOptions } from './tools/snapshot.js';
export { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from './tools/snapshot.js';
