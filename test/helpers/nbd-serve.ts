/**
 * Starting NBD servers as separate processes for tests and benchmarks: `vdisk serve` (the
 * built CLI, through the Node that runs the tests), qemu-nbd and nbdkit, each waited for until
 * it accepts connections, and stopped with a signal.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { VDISK_MAIN } from './run.js';

export interface ServerProcess {
  /** The NBD URI of the export. */
  uri: string;
  proc: ChildProcess;
  /** What the server printed so far. */
  output(): { stdout: string; stderr: string };
  /** Resolves with the exit code (or 128 + signal number) when the process has ended. */
  exited: Promise<number>;
  /** Sends a signal and waits for the process to end. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

function track(proc: ChildProcess): { output: () => { stdout: string; stderr: string }; exited: Promise<number> } {
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => {
    proc.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? signalNumber(signal) : 0)));
  });
  return { output: () => ({ stdout, stderr }), exited };
}

function signalNumber(signal: NodeJS.Signals): number {
  return { SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }[signal as string] ?? 0;
}

function stopper(proc: ChildProcess, exited: Promise<number>): (signal?: NodeJS.Signals) => Promise<number> {
  return async (signal = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    return exited;
  };
}

/** Starts `vdisk serve <args>` and waits for its "listening on URI" line. */
export async function startVdiskServe(
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [VDISK_MAIN, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const { output, exited } = track(proc);
  const uri = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vdisk serve did not start: ${JSON.stringify(output())}`)), 15_000);
    const onData = () => {
      const m = /listening on (\S+)/.exec(output().stdout);
      if (m) {
        clearTimeout(timer);
        proc.stdout?.off('data', onData);
        resolve(m[1]!);
      }
    };
    proc.stdout?.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`vdisk serve exited with ${code}: ${output().stderr}`));
    });
  });
  return { uri, proc, output, exited, stop: stopper(proc, exited) };
}

/** A TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitConnectable(address: { socket: string } | { port: number }, exited: Promise<number>): Promise<void> {
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && !done) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = 'socket' in address ? net.connect(address.socket) : net.connect(address.port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the server did not start listening');
}

/**
 * Starts qemu-nbd with `args` (which must not include -k or -p) on a Unix socket or a TCP port.
 * Note: a probe connection counts as a client, so pass -t (or -e > 1) to keep it serving.
 */
export async function startQemuNbd(
  args: readonly string[],
  listen: { socket: string } | { port: number },
): Promise<ServerProcess> {
  const where = 'socket' in listen ? ['-k', listen.socket] : ['-b', '127.0.0.1', '-p', String(listen.port)];
  const proc = spawn('qemu-nbd', [...where, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const { output, exited } = track(proc);
  await waitConnectable(listen, exited);
  const x = args.indexOf('-x');
  const name = x >= 0 ? encodeURIComponent(args[x + 1] ?? '') : '';
  const uri =
    'socket' in listen ? `nbd+unix:///${name}?socket=${listen.socket}` : `nbd://127.0.0.1:${listen.port}/${name}`;
  return { uri, proc, output, exited, stop: stopper(proc, exited) };
}

/** Starts nbdkit in the foreground with `args` (plugin, its parameters, filters) on a Unix socket. */
export async function startNbdkit(args: readonly string[], socket: string): Promise<ServerProcess> {
  const proc = spawn('nbdkit', ['-f', '-U', socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const { output, exited } = track(proc);
  await waitConnectable({ socket }, exited);
  return { uri: `nbd+unix:///?socket=${socket}`, proc, output, exited, stop: stopper(proc, exited) };
}
