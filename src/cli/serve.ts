/** `vdisk serve`: qemu-nbd's arguments; the server is src/tools/serve.ts and src/nbd/. */
import { parseCacheModeName } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import type { DetectZeroes, DiscardMode } from '../nbd/export.js';
import { serveImage } from '../tools/serve.js';
import { parseSnapshotParam } from '../tools/snapshot-param.js';
import { type CliCommand, type CommandSpec, oneFilename, parseCommandLine, usageError } from './args.js';
import { NBD_CLIENT_OPTIONS, nbdClientOptions } from './nbd-options.js';
import { detachOutput, forkServer, isForkedServer, removePidFile, writePidFile } from './serve-daemon.js';
import { tlsChoice, tlsObjects } from './serve-object.js';

const SPEC: CommandSpec = {
  name: 'serve',
  operands: 'filename',
  purpose: 'export an image over NBD (qemu-nbd)',
  description: `
Exports an image over NBD, as qemu-nbd does, until stopped (SIGINT or SIGTERM: clients' requests
in flight finish, the image is flushed and closed). Prints the NBD URI it serves at, which
qemu-img, qemu-io, nbdinfo, nbdcopy and fio --ioengine=nbd take.`,
  options: {
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    cache: { type: 'string', arg: 'MODE', help: 'none, writeback (default), writethrough, directsync, unsafe' },
    nocache: { type: 'boolean', short: 'n', help: 'short for --cache=none' },
    'read-only': { type: 'boolean', short: 'r', help: 'export read-only' },
    'load-snapshot': {
      type: 'string',
      short: 'l',
      arg: 'SNAPSHOT_PARAM',
      help: "export an internal snapshot, read-only: 'snapshot.id=ID,snapshot.name=NAME' or an id or name",
    },
    snapshot: {
      type: 'boolean',
      short: 's',
      help: 'serve a temporary qcow2 overlay over the image: writes go to it and are\ndiscarded at exit; the image is not modified',
    },
    'force-share': {
      type: 'boolean',
      short: 'U',
      help: 'serve an image another process holds, without the image lock (only with -r)',
    },
    socket: { type: 'string', short: 'k', arg: 'PATH', help: 'listen on a Unix socket' },
    port: {
      type: 'string',
      short: 'p',
      arg: 'PORT',
      help: 'listen on TCP port PORT (default 10809; 0 picks a free port)',
    },
    bind: { type: 'string', short: 'b', arg: 'ADDR', help: 'the TCP address to bind (default 0.0.0.0)' },
    'export-name': { type: 'string', short: 'x', arg: 'NAME', help: "the export's name (default '')" },
    description: { type: 'string', short: 'D', arg: 'TEXT', help: "the export's description" },
    shared: { type: 'string', short: 'e', arg: 'N', help: 'serve N clients at once (default 1; 0: no limit)' },
    persistent: { type: 'boolean', short: 't', help: 'keep serving after the last client disconnects' },
    discard: { type: 'string', arg: 'MODE', help: "ignore (default) or unmap: what a client's trim does" },
    'detect-zeroes': {
      type: 'string',
      arg: 'MODE',
      help: 'off (default), on or unmap: turn writes of zeros into zero writes',
    },
    'allocation-depth': { type: 'boolean', short: 'A', help: 'offer the qemu:allocation-depth metadata context' },
    bitmap: {
      type: 'string',
      short: 'B',
      arg: 'NAME',
      multiple: true,
      help: 'offer persistent dirty bitmap NAME as the qemu:dirty-bitmap:NAME context (repeatable)',
    },
    'confine-backing': {
      type: 'string',
      arg: 'DIR',
      help: 'backing files must lie inside DIR (for untrusted images: no /etc/shadow, no devices)',
    },
    'allow-backing-uri': {
      type: 'string',
      arg: 'URI',
      multiple: true,
      help: 'with --confine-backing: an NBD URI the backing chain may still name (repeatable)',
    },
    object: {
      type: 'string',
      arg: 'OBJECTDEF',
      multiple: true,
      help: 'tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off]: TLS\ncredentials for --tls-creds ID, as qemu-nbd takes them (repeatable)',
    },
    'tls-creds': {
      type: 'string',
      arg: 'ID',
      help: 'require TLS with the credentials of --object ID; without --object, ID may be a\ndirectory holding ca-cert.pem, server-cert.pem, server-key.pem',
    },
    'tls-verify-peer': {
      type: 'string',
      arg: 'on|off',
      help: 'require a client certificate signed by the CA (default on)',
    },
    'handshake-limit': {
      type: 'string',
      arg: 'N',
      help: 'seconds a client has to finish the handshake (default 10)',
    },
    fork: { type: 'boolean', help: 'run the server in the background; return once it listens' },
    'pid-file': { type: 'string', arg: 'PATH', help: "write the server's process id to PATH (removed when it exits)" },
    verbose: { type: 'boolean', short: 'v', help: 'report dropped clients and failed handshakes on stderr' },
    ...NBD_CLIENT_OPTIONS,
  },
  notes: `
File I/O runs on libuv's thread pool; to use io_uring instead, start with UV_USE_IO_URING=1 in
the environment (it helps O_DIRECT at high queue depth on some hosts, and hurts on others).`,
};

export const serveCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const filename = oneFilename('serve', positionals);
    const format = values.format as string | undefined;
    if (values['force-share'] && !values['read-only'] && values['load-snapshot'] === undefined) {
      throw usageError('serve', '--force-share (-U) needs --read-only (-r)');
    }
    const discard = (values.discard as string | undefined) ?? 'ignore';
    if (discard !== 'ignore' && discard !== 'unmap') {
      throw usageError('serve', `Invalid discard option: ${discard} (use ignore or unmap)`);
    }
    const detectZeroes = (values['detect-zeroes'] as string | undefined) ?? 'off';
    if (detectZeroes !== 'off' && detectZeroes !== 'on' && detectZeroes !== 'unmap') {
      throw usageError('serve', `Invalid detect-zeroes option: ${detectZeroes} (use off, on or unmap)`);
    }
    const verifyPeer = (values['tls-verify-peer'] as string | undefined) ?? 'on';
    if (verifyPeer !== 'on' && verifyPeer !== 'off') {
      throw usageError('serve', `Invalid --tls-verify-peer value: ${verifyPeer} (use on or off)`);
    }
    const tls = tlsChoice(
      values['tls-creds'] as string | undefined,
      tlsObjects((values.object as string[] | undefined) ?? []),
      verifyPeer === 'on',
    );
    const forked = isForkedServer();
    if (values.fork && !forked) return forkServer(args, streams);
    let detached = false;
    const say = (text: string) => {
      if (!detached) streams.err(text);
    };
    const verbose = Boolean(values.verbose);
    const pidFile = values['pid-file'] as string | undefined;
    const handle = await serveImage({
      filename,
      format: format === undefined ? 'probe' : formatDefinition(format).name,
      cache: values.nocache ? 'none' : parseCacheModeName((values.cache as string | undefined) ?? 'writeback'),
      readOnly: Boolean(values['read-only']),
      snapshot:
        values['load-snapshot'] === undefined ? undefined : parseSnapshotParam(values['load-snapshot'] as string),
      forceShare: Boolean(values['force-share']),
      temporaryOverlay: Boolean(values.snapshot),
      nbd: nbdClientOptions('serve', values),
      confineBacking: values['confine-backing'] as string | undefined,
      allowBackingUris: (values['allow-backing-uri'] as string[] | undefined) ?? [],
      socket: values.socket as string | undefined,
      port: integer(values.port, 'port', 0, 65535) ?? 10809,
      bind: (values.bind as string | undefined) ?? '0.0.0.0',
      exportName: (values['export-name'] as string | undefined) ?? '',
      description: values.description as string | undefined,
      shared: integer(values.shared, 'shared device number', 0, 2 ** 31 - 1) ?? 1,
      persistent: Boolean(values.persistent),
      discard: discard as DiscardMode,
      detectZeroes: detectZeroes as DetectZeroes,
      allocationDepth: Boolean(values['allocation-depth']),
      // qemu-nbd keeps its -B list last first: the contexts are listed, and numbered, in that order.
      bitmaps: [...((values.bitmap as string[] | undefined) ?? [])].reverse(),
      tlsCreds: tls?.dir,
      tlsVerifyPeer: tls?.verifyPeer,
      handshakeTimeout: integer(values['handshake-limit'], 'handshake limit', 1, 86400) ?? 10,
      log: verbose ? (message) => say(`vdisk serve: ${message}\n`) : undefined,
    });
    let signals = 0;
    const stop = (signal: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        // A second signal: the user does not want to wait for clients.
        say(`vdisk serve: ${signal} again, exiting without waiting\n`);
        if (pidFile !== undefined) void removePidFile(pidFile).finally(() => process.exit(1));
        else process.exit(1);
      }
      handle.close().catch(() => {});
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    if (pidFile !== undefined) {
      try {
        await writePidFile(pidFile);
      } catch (err) {
        await handle.close().catch(() => {});
        throw err;
      }
    }
    // Only now: a client or test that sees the URI may signal at once.
    if (handle.probedRaw) {
      streams.err(
        `vdisk serve: warning: Image format was not specified for '${filename}' and probing guessed raw; writes that would change how block 0 probes are refused (use -f raw)\n`,
      );
    }
    streams.out(`vdisk serve: listening on ${handle.uri}\n`);
    if (forked) {
      detachOutput();
      detached = true;
    }

    try {
      await handle.closed;
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      if (pidFile !== undefined) await removePidFile(pidFile);
    }
    return 0;
  },
};

function integer(value: unknown, what: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  const n = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new VdiskError('EINVAL', `Invalid ${what}: '${text}'`);
  return n;
}
