/**
 * The options that shape the transmission phase's replies: STRUCTURED_REPLY, and the metadata
 * contexts BLOCK_STATUS reports (LIST_META_CONTEXT, SET_META_CONTEXT).
 */
import { decodeMetaContextRequest, encodeMetaContextReply } from '../../nbd-wire/handshake-codec.js';
import {
  CONTEXT_ALLOCATION_DEPTH,
  CONTEXT_BASE_ALLOCATION,
  CONTEXT_ID_ALLOCATION_DEPTH,
  CONTEXT_ID_BASE_ALLOCATION,
  OPT,
  optionName,
  REP,
} from '../../nbd-wire/protocol.js';
import type { Negotiation, OptionOutcome } from './negotiation.js';

/** NBD_OPT_STRUCTURED_REPLY. */
export function structuredReply(n: Negotiation, data: Buffer): OptionOutcome {
  if (data.length > 0) return n.refuseData();
  if (n.structured) {
    n.error(REP.ERR_INVALID, 'structured reply already negotiated');
  } else {
    n.reply(REP.ACK);
    n.structured = true;
  }
  return 'more';
}

/** NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
export function metaContext(n: Negotiation, data: Buffer): OptionOutcome {
  const option = n.option;
  const set = option === OPT.SET_META_CONTEXT;
  // A SET replaces the selection even when it fails.
  if (set) n.meta = undefined;
  if (set && !n.structured) {
    n.error(REP.ERR_INVALID, `request option '${optionName(option)}' when structured reply is not negotiated`);
    return 'more';
  }
  const req = decodeMetaContextRequest(data);
  if (!req.ok) {
    n.error(REP.ERR_INVALID, req.message);
    return 'more';
  }
  if (req.exportName !== n.export.name) return n.refuseUnknownExport(req.exportName);
  const selection = selectContexts(req.queries, !set, n.export.allocationDepth);
  // LIST answers with id 0; SET with the ids the contexts have in BLOCK_STATUS replies.
  if (selection.base) {
    n.send(encodeMetaContextReply(option, set ? CONTEXT_ID_BASE_ALLOCATION : 0, CONTEXT_BASE_ALLOCATION));
  }
  if (selection.depth) {
    n.send(encodeMetaContextReply(option, set ? CONTEXT_ID_ALLOCATION_DEPTH : 0, CONTEXT_ALLOCATION_DEPTH));
  }
  n.reply(REP.ACK);
  if (set) n.meta = { exportName: req.exportName, ...selection };
  return 'more';
}

/**
 * The contexts a list of queries selects, as qemu-nbd reads them: "base:allocation" and
 * "qemu:allocation-depth" by name; "base:" and "qemu:" as wildcards only when listing; no
 * queries when listing means everything; anything else is ignored.
 */
export function selectContexts(
  queries: ReadonlyArray<string | null>,
  listing: boolean,
  depthAvailable: boolean,
): { base: boolean; depth: boolean } {
  if (listing && queries.length === 0) return { base: true, depth: depthAvailable };
  let base = false;
  let depth = false;
  for (const q of queries) {
    if (q === null) continue;
    if (q.startsWith('base:')) {
      const leaf = q.slice(5);
      if (leaf === 'allocation' || (leaf === '' && listing)) base = true;
    } else if (q.startsWith('qemu:')) {
      const leaf = q.slice(5);
      if (leaf === 'allocation-depth' || (leaf === '' && listing)) depth = depthAvailable || depth;
    }
  }
  return { base, depth };
}
