/**
 * What an NBD server's answers become for vdisk's callers: the errno values of the
 * transmission phase as VdiskError codes, and the one shape of a protocol violation (EPROTO),
 * after which vdisk trusts nothing more on that connection.
 */
import { type ErrorCode, VdiskError } from '../../block/errors.js';
import { NBD_ERR } from '../../nbd-wire/protocol.js';

const CODES: Record<number, ErrorCode> = {
  [NBD_ERR.EPERM]: 'EACCES',
  [NBD_ERR.EIO]: 'EIO',
  [NBD_ERR.ENOMEM]: 'EIO',
  [NBD_ERR.EINVAL]: 'EINVAL',
  [NBD_ERR.ENOSPC]: 'ENOSPC',
  [NBD_ERR.EOVERFLOW]: 'EOVERFLOW',
  [NBD_ERR.ENOTSUP]: 'ENOTSUP',
  [NBD_ERR.ESHUTDOWN]: 'ESHUTDOWN',
};

const TEXT: Record<number, string> = {
  [NBD_ERR.EPERM]: 'Operation not permitted',
  [NBD_ERR.EIO]: 'Input/output error',
  [NBD_ERR.ENOMEM]: 'Cannot allocate memory',
  [NBD_ERR.EINVAL]: 'Invalid argument',
  [NBD_ERR.ENOSPC]: 'No space left on device',
  [NBD_ERR.EOVERFLOW]: 'Value too large for defined data type',
  [NBD_ERR.ENOTSUP]: 'Operation not supported',
  [NBD_ERR.ESHUTDOWN]: 'Cannot send after transport endpoint shutdown',
};

/** A request the server answered with an error; the connection stays usable. */
export function serverError(errno: number, message: string): VdiskError {
  const text = TEXT[errno] ?? `error ${errno}`;
  // Control characters from a server never reach a terminal as they are.
  const clean = message.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 512);
  return new VdiskError(CODES[errno] ?? 'EIO', clean ? `${text} (server reported: ${clean})` : text);
}

/** The server broke the protocol; `what` says how. */
export function protocolError(what: string): VdiskError {
  return new VdiskError('EPROTO', `NBD protocol error: ${what}`);
}
