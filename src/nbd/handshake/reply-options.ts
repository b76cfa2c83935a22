/**
 * The options that shape the transmission phase's replies: STRUCTURED_REPLY, and the metadata
 * contexts BLOCK_STATUS reports (LIST_META_CONTEXT, SET_META_CONTEXT).
 */
import { decodeMetaContextRequest, encodeMetaContextReply } from '../../nbd-wire/handshake-codec.js';
import {
  CONTEXT_ALLOCATION_DEPTH,
  CONTEXT_BASE_ALLOCATION,
  CONTEXT_DIRTY_BITMAP_PREFIX,
  CONTEXT_ID_ALLOCATION_DEPTH,
  CONTEXT_ID_BASE_ALLOCATION,
  CONTEXT_ID_FIRST_DIRTY_BITMAP,
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
  const names = n.export.bitmaps.map((b) => b.name);
  const selection = selectContexts(req.queries, !set, n.export.allocationDepth, names);
  // LIST answers with id 0; SET with the ids the contexts have in BLOCK_STATUS replies.
  if (selection.base) {
    n.send(encodeMetaContextReply(option, set ? CONTEXT_ID_BASE_ALLOCATION : 0, CONTEXT_BASE_ALLOCATION));
  }
  if (selection.depth) {
    n.send(encodeMetaContextReply(option, set ? CONTEXT_ID_ALLOCATION_DEPTH : 0, CONTEXT_ALLOCATION_DEPTH));
  }
  for (const i of selection.bitmaps) {
    const id = set ? CONTEXT_ID_FIRST_DIRTY_BITMAP + i : 0;
    n.send(encodeMetaContextReply(option, id, `${CONTEXT_DIRTY_BITMAP_PREFIX}${names[i]}`));
  }
  n.reply(REP.ACK);
  if (set) n.meta = { exportName: req.exportName, ...selection };
  return 'more';
}

/**
 * The contexts a list of queries selects, as qemu-nbd reads them: "base:allocation",
 * "qemu:allocation-depth" and "qemu:dirty-bitmap:NAME" by name; "base:", "qemu:" and
 * "qemu:dirty-bitmap:" as wildcards only when listing; no queries when listing means
 * everything; anything else is ignored. `bitmaps` are the indexes (in `bitmapNames`) selected.
 */
export function selectContexts(
  queries: ReadonlyArray<string | null>,
  listing: boolean,
  depthAvailable: boolean,
  bitmapNames: readonly string[] = [],
): { base: boolean; depth: boolean; bitmaps: number[] } {
  const all = bitmapNames.map((_, i) => i);
  if (listing && queries.length === 0) return { base: true, depth: depthAvailable, bitmaps: all };
  let base = false;
  let depth = false;
  const bitmaps = new Set<number>();
  for (const q of queries) {
    if (q === null) continue;
    if (q.startsWith('base:')) {
      const leaf = q.slice(5);
      if (leaf === 'allocation' || (leaf === '' && listing)) base = true;
    } else if (q.startsWith('qemu:')) {
      const leaf = q.slice(5);
      if (leaf === 'allocation-depth' || (leaf === '' && listing)) depth = depthAvailable || depth;
      const bitmap = q.startsWith(CONTEXT_DIRTY_BITMAP_PREFIX)
        ? q.slice(CONTEXT_DIRTY_BITMAP_PREFIX.length)
        : undefined;
      if ((leaf === '' || bitmap === '') && listing) for (const i of all) bitmaps.add(i);
      else if (bitmap !== undefined) for (const i of all) if (bitmapNames[i] === bitmap) bitmaps.add(i);
    }
  }
  return { base, depth, bitmaps: [...bitmaps].sort((a, b) => a - b) };
}
