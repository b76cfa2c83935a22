/**
 * The one error type of vdisk. Every failure that reaches a user, an NBD client or the CLI is a
 * VdiskError with a code from a closed set, so callers can map it without parsing messages.
 */

export const ERROR_CODES = [
  'EIO', // the host or the image failed an operation
  'ENOSPC', // the host ran out of space
  'EROFS', // a write to something opened read-only
  'EINVAL', // a bad argument or request (out of range, unaligned where it must not be)
  'ENOTSUP', // a valid request this driver, filesystem or image cannot do
  'ECORRUPT', // the image's metadata is inconsistent or hostile
  'ENOENT', // a file that does not exist
  'EACCES', // permission denied by the host
  'EBUSY', // the image is locked by another user
  'ESHUTDOWN', // the image or server is closing
  'EOVERFLOW', // a value beyond what vdisk can represent (offsets over 2^53)
  'ETIMEDOUT', // a remote server did not answer in time
  'EPROTO', // a remote server broke its protocol (a bad magic, a reply to a request never sent)
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class VdiskError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VdiskError';
    this.code = code;
  }
}

export function isVdiskError(err: unknown): err is VdiskError {
  return err instanceof VdiskError;
}

/** Host errno names that map onto vdisk codes; anything else is EIO. */
const SYSTEM_CODES: Record<string, ErrorCode> = {
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EROFS: 'EROFS',
  EINVAL: 'EINVAL',
  EOPNOTSUPP: 'ENOTSUP',
  ENOTSUP: 'ENOTSUP',
  ENOSYS: 'ENOTSUP',
  ENOENT: 'ENOENT',
  ENOTDIR: 'ENOENT',
  EACCES: 'EACCES',
  EPERM: 'EACCES',
  EAGAIN: 'EBUSY',
  EWOULDBLOCK: 'EBUSY',
  EBUSY: 'EBUSY',
  EISDIR: 'EINVAL',
  EFBIG: 'EINVAL',
  EOVERFLOW: 'EOVERFLOW',
  ETIMEDOUT: 'ETIMEDOUT',
};

/** Short human text for host errno names, as strerror prints them. */
const SYSTEM_TEXT: Record<string, string> = {
  ENOSPC: 'No space left on device',
  EDQUOT: 'Disk quota exceeded',
  EROFS: 'Read-only file system',
  EINVAL: 'Invalid argument',
  EOPNOTSUPP: 'Operation not supported',
  ENOTSUP: 'Operation not supported',
  ENOSYS: 'Function not implemented',
  ENOENT: 'No such file or directory',
  ENOTDIR: 'Not a directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EAGAIN: 'Resource temporarily unavailable',
  EBUSY: 'Device or resource busy',
  EISDIR: 'Is a directory',
  EIO: 'Input/output error',
  EFBIG: 'File too large',
  EOVERFLOW: 'Value too large for defined data type',
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  EPIPE: 'Broken pipe',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  ENETUNREACH: 'Network is unreachable',
  ENOTFOUND: 'Name or service not known',
};

/**
 * Wraps an error thrown by Node's fs or the native helper into a VdiskError.
 * `what` says what was being done ("Could not open 'x.img'"); the host's reason follows it.
 */
export function fromSystemError(err: unknown, what: string): VdiskError {
  if (err instanceof VdiskError) return err;
  const sys = typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : '';
  const code = SYSTEM_CODES[sys] ?? 'EIO';
  const reason = SYSTEM_TEXT[sys] ?? (err instanceof Error ? err.message : String(err));
  return new VdiskError(code, `${what}: ${reason}`, { cause: err });
}

/** The errno an NBD client should see for a vdisk error (NBD spec error values). */
export function nbdErrno(err: unknown): number {
  const code = err instanceof VdiskError ? err.code : 'EIO';
  switch (code) {
    case 'EROFS':
    case 'EACCES':
      return 1; // EPERM
    case 'ENOSPC':
      return 28;
    case 'EINVAL':
      return 22;
    case 'ENOTSUP':
      return 95;
    case 'EOVERFLOW':
      return 75;
    case 'ESHUTDOWN':
      return 108;
    default:
      return 5; // EIO
  }
}
