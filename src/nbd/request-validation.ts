/**
 * Which requests the server refuses, and with which NBD error and message (qemu-nbd's words).
 * The rules an image imposes (bounds, read-only) are BlockBackend's, from request-checks.ts;
 * the rest (payload limit, flags per command, known commands) is NBD's own.
 */
import { fitsWithin, isWriteToReadOnly } from '../block/request-checks.js';
import { CMD, CMD_FLAG, commandName, NBD_ERR } from '../nbd-wire/protocol.js';
import type { Request } from '../nbd-wire/transmission-codec.js';
import type { NbdExport } from './export.js';

export interface RequestProblem {
  /** The NBD error value of the reply. */
  error: number;
  message: string;
}

/**
 * The first problem of a request, checked in qemu-nbd's order, or undefined when it may run.
 * An over-long WRITE never gets here: its payload is refused before it is read.
 */
export function validateRequest(
  req: Readonly<Request>,
  exp: NbdExport,
  structured: boolean,
): RequestProblem | undefined {
  const { type, flags, offset, length } = req;
  // No reply may follow a DISC, so there is nothing to refuse it with.
  if (type === CMD.DISC) return undefined;
  if ((type === CMD.READ || type === CMD.CACHE) && length > exp.maximumPayload) {
    return payloadTooLong(length, exp);
  }
  if (isWriteToReadOnly(changesImage(type), exp.readOnly)) {
    return { error: NBD_ERR.EPERM, message: 'Export is read-only' };
  }
  const size = exp.backend.length;
  if (!fitsWithin(offset, length, size)) {
    return {
      error: type === CMD.WRITE || type === CMD.WRITE_ZEROES ? NBD_ERR.ENOSPC : NBD_ERR.EINVAL,
      message: `operation past EOF; From: ${offset}, Len: ${length}, Size: ${size}`,
    };
  }
  if ((flags & ~allowedFlags(type, structured)) !== 0) {
    return {
      error: NBD_ERR.EINVAL,
      message: `unsupported flags for command ${commandName(type)} (got 0x${flags.toString(16)})`,
    };
  }
  if (type > CMD.BLOCK_STATUS) return { error: NBD_ERR.EINVAL, message: `invalid request type (${type}) received` };
  return undefined;
}

/** A READ, CACHE or WRITE longer than the export's maximum payload. */
export function payloadTooLong(length: number, exp: NbdExport): RequestProblem {
  return { error: NBD_ERR.EINVAL, message: `len (${length}) is larger than max len (${exp.maximumPayload})` };
}

function changesImage(type: number): boolean {
  return type === CMD.WRITE || type === CMD.TRIM || type === CMD.WRITE_ZEROES;
}

/** FUA on every command; DF (with structured replies), NO_HOLE, FAST_ZERO and REQ_ONE where they apply. */
function allowedFlags(type: number, structured: boolean): number {
  switch (type) {
    case CMD.READ:
      return structured ? CMD_FLAG.FUA | CMD_FLAG.DF : CMD_FLAG.FUA;
    case CMD.WRITE_ZEROES:
      return CMD_FLAG.FUA | CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO;
    case CMD.BLOCK_STATUS:
      return CMD_FLAG.FUA | CMD_FLAG.REQ_ONE;
    default:
      return CMD_FLAG.FUA;
  }
}

/** The bytes of data a request moves (its payload or its reply's), which the budget counts. */
export function dataBytesOf(type: number, length: number): number {
  return type === CMD.READ || type === CMD.WRITE ? length : 0;
}
