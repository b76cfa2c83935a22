/**
 * The rules every request to an image obeys, as pure predicates. BlockBackend turns a broken
 * rule into a VdiskError; the NBD server turns it into the error reply its protocol asks for.
 * Both ask here, so the rules cannot drift apart.
 */

/** An offset or length the engine addresses exactly: a non-negative integer below 2^53. */
export function isByteCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/**
 * True when [offset, offset + length) ends within `size` bytes. No sum is formed, so the answer
 * stays exact for offsets at or beyond 2^53 (which NBD's 64-bit fields can carry).
 */
export function fitsWithin(offset: number, length: number, size: number): boolean {
  return offset <= size && length <= size - offset;
}

/** A request that changes the image is refused when the image is read-only. */
export function isWriteToReadOnly(changesImage: boolean, readOnly: boolean): boolean {
  return changesImage && readOnly;
}
