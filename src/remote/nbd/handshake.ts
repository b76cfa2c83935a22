/**
 * The client's handshake (fixed newstyle): client flags, STARTTLS when TLS is asked for,
 * STRUCTURED_REPLY, SET_META_CONTEXT for base:allocation and qemu:allocation-depth (which
 * servers that do not know it leave out), then GO asking for the block sizes (so a server that
 * needs aligned requests gets them), falling back to EXPORT_NAME for servers without GO. Every answer is checked; a server that
 * sends something the protocol does not allow gets EPROTO, never a hang or a crash.
 */
import type { Duplex } from 'node:stream';
import { VdiskError } from '../../block/errors.js';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../nbd-wire/handshake-codec.js';
import {
  CONTEXT_ALLOCATION_DEPTH,
  CONTEXT_BASE_ALLOCATION,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  GREETING_SIZE,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  INFO,
  NBDMAGIC,
  OPT,
  REP,
  TF,
} from '../../nbd-wire/protocol.js';
import { readU64 } from '../../util/u64.js';
import { printable, protocolError } from './errors.js';
import type { OptionChannel, OptionReply } from './option-channel.js';

/** The second magic of an oldstyle server (0x00420281861253). */
const OLDSTYLE_HI = 0x00004202;
const OLDSTYLE_LO = 0x81861253;
/** Replies to one option beyond this many are an attack, not an answer. */
const MAX_REPLIES = 64;

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

/** What the handshake settled. */
export interface NegotiatedExport {
  size: number;
  /** Transmission flags (TF.*). */
  flags: number;
  /** As the server gave them (NBD_INFO_BLOCK_SIZE), if it did. */
  blockSizes?: BlockSizes;
  structuredReplies: boolean;
  /** The context ids of base:allocation and qemu:allocation-depth, when the server agreed to them. */
  contexts: { baseAllocation?: number; allocationDepth?: number };
}

export interface HandshakeRequest {
  exportName: string;
  /** Upgrades the socket to TLS after the server accepted STARTTLS; absent: no TLS. */
  startTls?: (socket: Duplex) => Promise<Duplex>;
}

function isError(type: number): boolean {
  return type >= 0x80000000;
}

function message(reply: OptionReply): string {
  return printable(reply.data.toString('utf8'));
}

/** The VdiskError for an error reply to GO or EXPORT_NAME. */
function exportRefused(exportName: string, reply: OptionReply): VdiskError {
  const said = message(reply);
  const suffix = said ? `; server reported: ${said}` : '';
  switch (reply.type) {
    case REP.ERR_UNKNOWN:
      return new VdiskError('ENOENT', `Requested export '${exportName}' not available${suffix}`);
    case REP.ERR_TLS_REQD:
      return new VdiskError('EACCES', `The server requires TLS (use an nbds:// URI)${suffix}`);
    case REP.ERR_POLICY:
      return new VdiskError('EACCES', `The server refused export '${exportName}'${suffix}`);
    case REP.ERR_SHUTDOWN:
      return new VdiskError('ESHUTDOWN', `The server is shutting down${suffix}`);
    default:
      return new VdiskError(
        'EIO',
        `The server refused export '${exportName}' (reply 0x${reply.type.toString(16)})${suffix}`,
      );
  }
}

async function greeting(channel: OptionChannel): Promise<number> {
  const g = await channel.read(GREETING_SIZE);
  if (!g.subarray(0, 8).equals(NBDMAGIC)) throw protocolError('not an NBD server (no NBDMAGIC greeting)');
  const hi = g.readUInt32BE(8);
  const lo = g.readUInt32BE(12);
  if (hi === OLDSTYLE_HI && lo === OLDSTYLE_LO) {
    throw new VdiskError('ENOTSUP', 'The server speaks the oldstyle NBD handshake, which vdisk does not support');
  }
  if (hi !== IHAVEOPT_HI || lo !== IHAVEOPT_LO) throw protocolError('unknown handshake style');
  return g.readUInt16BE(16);
}

async function startTls(channel: OptionChannel, upgrade: (socket: Duplex) => Promise<Duplex>): Promise<void> {
  channel.send(OPT.STARTTLS);
  const reply = await channel.reply(OPT.STARTTLS);
  if (reply.type !== REP.ACK) {
    if (isError(reply.type)) throw new VdiskError('EACCES', `The server does not support TLS: ${message(reply)}`);
    throw protocolError(`reply type ${reply.type} to NBD_OPT_STARTTLS`);
  }
  channel.upgrade(await upgrade(channel.socket));
}

/** True when the server agreed to structured replies. */
async function structuredReply(channel: OptionChannel): Promise<boolean> {
  channel.send(OPT.STRUCTURED_REPLY);
  const reply = await channel.reply(OPT.STRUCTURED_REPLY);
  if (reply.type === REP.ACK) return true;
  if (reply.type === REP.ERR_TLS_REQD) throw exportRefused('', reply);
  if (isError(reply.type)) return false;
  throw protocolError(`reply type ${reply.type} to NBD_OPT_STRUCTURED_REPLY`);
}

async function metaContexts(channel: OptionChannel, exportName: string): Promise<NegotiatedExport['contexts']> {
  channel.send(
    OPT.SET_META_CONTEXT,
    encodeMetaContextRequest(exportName, [CONTEXT_BASE_ALLOCATION, CONTEXT_ALLOCATION_DEPTH]),
  );
  const contexts: NegotiatedExport['contexts'] = {};
  for (let n = 0; n < MAX_REPLIES; n++) {
    const reply = await channel.reply(OPT.SET_META_CONTEXT);
    if (reply.type === REP.ACK) return withoutSharedIds(contexts);
    // A server without block status (or with none of these contexts) answers with an error.
    if (isError(reply.type)) return {};
    if (reply.type !== REP.META_CONTEXT || reply.data.length < 4) {
      throw protocolError(`reply type ${reply.type} to NBD_OPT_SET_META_CONTEXT`);
    }
    const id = reply.data.readUInt32BE(0);
    const name = reply.data.subarray(4).toString('utf8');
    if (name === CONTEXT_BASE_ALLOCATION && contexts.baseAllocation === undefined) contexts.baseAllocation = id;
    else if (name === CONTEXT_ALLOCATION_DEPTH && contexts.allocationDepth === undefined) contexts.allocationDepth = id;
    else throw protocolError(`the server selected metadata context '${name.slice(0, 64)}', which was not asked for`);
  }
  throw protocolError('endless replies to NBD_OPT_SET_META_CONTEXT');
}

/** Two contexts under one id could not be told apart in a reply: a protocol error. */
function withoutSharedIds(contexts: NegotiatedExport['contexts']): NegotiatedExport['contexts'] {
  if (contexts.allocationDepth !== undefined && contexts.allocationDepth === contexts.baseAllocation) {
    throw protocolError('the server gave two metadata contexts the same id');
  }
  return contexts;
}

function blockSizes(data: Buffer): BlockSizes {
  if (data.length !== 14) throw protocolError('a block size information of the wrong length');
  const sizes = { minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
  const power = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (
    !power(sizes.minimum) ||
    sizes.minimum > 65536 ||
    !power(sizes.preferred) ||
    sizes.preferred < sizes.minimum ||
    sizes.maximum < sizes.minimum ||
    // The spec allows 0xffffffff ("no limit") besides a multiple of the minimum.
    (sizes.maximum % sizes.minimum !== 0 && sizes.maximum !== 0xffffffff)
  ) {
    throw protocolError(`invalid block sizes ${sizes.minimum}/${sizes.preferred}/${sizes.maximum}`);
  }
  return sizes;
}

/** GO: the export's size and flags; undefined when the server does not know GO (use EXPORT_NAME). */
async function go(
  channel: OptionChannel,
  exportName: string,
): Promise<Omit<NegotiatedExport, 'structuredReplies' | 'contexts'> | undefined> {
  // Asking for BLOCK_SIZE promises to honour the sizes: the driver aligns and splits for them.
  channel.send(OPT.GO, encodeInfoRequest(exportName, [INFO.BLOCK_SIZE]));
  let size: number | undefined;
  let flags = 0;
  let sizes: BlockSizes | undefined;
  for (let n = 0; n < MAX_REPLIES; n++) {
    const reply = await channel.reply(OPT.GO);
    if (reply.type === REP.ACK) {
      if (size === undefined) throw protocolError('NBD_OPT_GO ended without the export size');
      return { size, flags, ...(sizes ? { blockSizes: sizes } : {}) };
    }
    if (reply.type === REP.ERR_UNSUP) return undefined;
    if (isError(reply.type)) throw exportRefused(exportName, reply);
    if (reply.type !== REP.INFO || reply.data.length < 2) throw protocolError(`reply type ${reply.type} to NBD_OPT_GO`);
    const info = reply.data.readUInt16BE(0);
    if (info === INFO.EXPORT) {
      if (reply.data.length !== 12) throw protocolError('an export information of the wrong length');
      size = readU64(reply.data, 2, 'export size');
      flags = reply.data.readUInt16BE(10);
    } else if (info === INFO.BLOCK_SIZE) {
      sizes = blockSizes(reply.data);
    }
  }
  throw protocolError('endless replies to NBD_OPT_GO');
}

/** The pre-GO way in: no reply on error (the server closes), size and flags on success. */
async function exportName(
  channel: OptionChannel,
  name: string,
  noZeroes: boolean,
): Promise<{ size: number; flags: number }> {
  channel.send(OPT.EXPORT_NAME, Buffer.from(name, 'utf8'));
  try {
    const reply = await channel.read(noZeroes ? 10 : 134);
    return { size: readU64(reply, 0, 'export size'), flags: reply.readUInt16BE(8) };
  } catch (err) {
    if (err instanceof VdiskError) throw err;
    throw new VdiskError('ENOENT', `Requested export '${name}' not available (the server closed the connection)`);
  }
}

/** Runs the handshake on a fresh connection. */
export async function negotiate(channel: OptionChannel, request: HandshakeRequest): Promise<NegotiatedExport> {
  const serverFlags = await greeting(channel);
  const fixed = (serverFlags & FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (serverFlags & FLAG_NO_ZEROES) !== 0;
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE((fixed ? FLAG_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_NO_ZEROES : 0));
  channel.write(clientFlags);
  if (request.startTls) {
    if (!fixed) throw new VdiskError('EACCES', 'The server does not support TLS (no fixed newstyle handshake)');
    await startTls(channel, request.startTls);
  }
  let structuredReplies = false;
  let contexts: NegotiatedExport['contexts'] = {};
  if (fixed) {
    structuredReplies = await structuredReply(channel);
    if (structuredReplies) contexts = await metaContexts(channel, request.exportName);
    const found = await go(channel, request.exportName);
    if (found) return withFlags({ ...found, structuredReplies, contexts });
  }
  const found = await exportName(channel, request.exportName, noZeroes);
  return withFlags({ ...found, structuredReplies, contexts });
}

/** Transmission flags count only with HAS_FLAGS set (the spec's rule for the first bit). */
function withFlags(negotiated: NegotiatedExport): NegotiatedExport {
  const flags = negotiated.flags & TF.HAS_FLAGS ? negotiated.flags : 0;
  return { ...negotiated, flags };
}
