/** qemu-img's -p progress line: "    (12.34/100%)" rewritten in place with a carriage return. */
import type { CliStreams } from './args.js';

export function progressPrinter(streams: CliStreams): {
  update: (done: number, total: number) => void;
  finish: () => void;
} {
  let last = -1;
  const print = (percent: number) => streams.out(`\r    (${percent.toFixed(2)}/100%)`);
  return {
    update(done, total) {
      const percent = total === 0 ? 100 : (done * 100) / total;
      // Only whole-percent steps, so a fast copy does not flood the terminal.
      if (Math.floor(percent) === last) return;
      last = Math.floor(percent);
      print(percent);
    },
    finish() {
      print(100);
      streams.out('\n');
    },
  };
}

/**
 * A progress bar for long runs (vdisk study): on a terminal, one line rewritten in place with
 * the bar, the count, what runs now and the time left; elsewhere (a log, a pipe), one line at
 * every tenth of the way, so logs stay short.
 */
export function progressBar(
  streams: CliStreams,
  options: { tty: boolean; width?: number; columns?: number },
): { update: (done: number, total: number, label: string) => void; finish: () => void } {
  const started = Date.now();
  const width = options.width ?? 24;
  let lastTenth = -1;
  let shown = false;
  const eta = (done: number, total: number) => {
    if (done === 0) return '';
    const left = Math.round((((Date.now() - started) / done) * (total - done)) / 1000);
    return left >= 60 ? `${Math.floor(left / 60)}m${String(left % 60).padStart(2, '0')}s left` : `${left}s left`;
  };
  return {
    update(done, total, label) {
      const fraction = total === 0 ? 1 : Math.min(1, done / total);
      if (options.tty) {
        const filled = Math.round(fraction * width);
        const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
        const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
        // One terminal line at most, or the carriage return could not take it back.
        const line = `[${bar}] ${percent} ${done}/${total} ${label}  ${eta(done, total)}`;
        streams.err(`\r${line.slice(0, Math.max(20, (options.columns ?? 80) - 1))}\x1b[K`);
        shown = true;
        return;
      }
      const tenth = Math.floor(fraction * 10);
      if (tenth === lastTenth) return;
      lastTenth = tenth;
      streams.err(
        `  ${String(tenth * 10).padStart(3)}% ${done}/${total} ${label}${tenth < 10 ? `  ${eta(done, total)}` : ''}\n`,
      );
    },
    finish() {
      if (shown) streams.err('\r\x1b[K');
    },
  };
}

/**
 * Runs `work` with qemu-img's -p line when `show` (not with -q): the line ends at 100% when the
 * work ends, as qemu-img's does.
 */
export async function withProgress<T>(
  show: boolean,
  streams: CliStreams,
  work: (onProgress?: (done: number, total: number) => void) => Promise<T>,
): Promise<T> {
  const progress = show ? progressPrinter(streams) : undefined;
  try {
    return await work(progress?.update);
  } finally {
    progress?.finish();
  }
}
