/** The options that choose the export and describe it: LIST, EXPORT_NAME, INFO and GO. */
import {
  decodeInfoRequest,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeServerReply,
} from '../../nbd-wire/handshake-codec.js';
import { INFO, MAX_STRING, OPT, REP } from '../../nbd-wire/protocol.js';
import { HandshakeError, type Negotiated, type Negotiation, type OptionOutcome, sanitize } from './negotiation.js';

/** NBD_OPT_LIST: the one export, with its description. */
export function listExports(n: Negotiation, data: Buffer): OptionOutcome {
  if (data.length > 0) return n.refuseData();
  n.send(encodeServerReply(n.export.name, n.export.description ?? ''));
  n.reply(REP.ACK);
  return 'more';
}

/** NBD_OPT_EXPORT_NAME, which has no error reply: a wrong name drops the connection. */
export function exportName(n: Negotiation, data: Buffer): Negotiated {
  const exp = n.export;
  if (data.length > MAX_STRING) throw new HandshakeError(`Export name of ${data.length} bytes is too long`);
  const name = data.toString('utf8');
  if (data.includes(0) || name !== exp.name) throw new HandshakeError(`Export '${sanitize(name)}' not found`);
  n.socket.write(encodeExportNameReply(exp.backend.length, n.transmissionFlags(), n.noZeroes));
  return n.entered(name);
}

/** NBD_OPT_INFO and NBD_OPT_GO: the export's information; GO then enters transmission. */
export function infoOrGo(n: Negotiation, data: Buffer): OptionOutcome {
  const exp = n.export;
  const option = n.option;
  const req = decodeInfoRequest(data);
  if (!req.ok) {
    n.error(REP.ERR_INVALID, req.message);
    return 'more';
  }
  if (req.name !== exp.name) return n.refuseUnknownExport(req.name);
  const blockSize = req.requests.includes(INFO.BLOCK_SIZE);
  if (req.requests.includes(INFO.NAME)) n.send(encodeInfoString(option, INFO.NAME, exp.name));
  if (exp.description !== undefined) n.send(encodeInfoString(option, INFO.DESCRIPTION, exp.description));
  // As qemu-nbd: always sent; the real minimum only to clients that promise to obey it.
  const minimum = option === OPT.INFO || blockSize ? exp.minimumBlockSize : 1;
  n.send(encodeInfoBlockSize(option, { minimum, preferred: Math.max(4096, minimum), maximum: exp.maximumPayload }));
  n.send(encodeInfoExport(option, exp.backend.length, n.transmissionFlags()));
  if (option === OPT.INFO && !blockSize && exp.minimumBlockSize > 1) {
    n.error(REP.ERR_BLOCK_SIZE_REQD, 'request NBD_INFO_BLOCK_SIZE to use this export');
    return 'more';
  }
  n.reply(REP.ACK);
  return option === OPT.GO ? n.entered(req.name) : 'more';
}
