/**
 * What an NBD server's answers become for vdisk's callers: the errno values of the
 * transmission phase as VdiskError codes, and the one shape of a protocol violation (EPROTO),
 * after which vdisk trusts nothing more on that connection.
 */
import { type ErrorCode, VdiskError } from '../../block/errors.js';
import { NBD_ERR } from '../../nbd-wire/protocol.js';

/** Each NBD errno: the vdisk code it becomes and strerror's text. */
const ERRNOS: Record<number, [ErrorCode, string]> = {
  [NBD_ERR.EPERM]: ['EACCES', 'Operation not permitted'],
  [NBD_ERR.EIO]: ['EIO', 'Input/output error'],
  [NBD_ERR.ENOMEM]: ['EIO', 'Cannot allocate memory'],
  [NBD_ERR.EINVAL]: ['EINVAL', 'Invalid argument'],
  [NBD_ERR.ENOSPC]: ['ENOSPC', 'No space left on device'],
  [NBD_ERR.EOVERFLOW]: ['EOVERFLOW', 'Value too large for defined data type'],
  [NBD_ERR.ENOTSUP]: ['ENOTSUP', 'Operation not supported'],
  [NBD_ERR.ESHUTDOWN]: ['ESHUTDOWN', 'Cannot send after transport endpoint shutdown'],
};

/** A server's text as vdisk shows it: control characters never reach a terminal as they are. */
export function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 512);
}

/** A request the server answered with an error; the connection stays usable. */
export function serverError(errno: number, message: string): VdiskError {
  const [code, text] = ERRNOS[errno] ?? ['EIO', `error ${errno}`];
  const clean = printable(message);
  return new VdiskError(code, clean ? `${text} (server reported: ${clean})` : text);
}

/** The server broke the protocol; `what` says how. */
export function protocolError(what: string): VdiskError {
  return new VdiskError('EPROTO', `NBD protocol error: ${what}`);
}
