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
