/**
 * How many block-layer requests are in progress in this process, across every open image.
 * The file driver reads it to decide whether a system call may block the event loop: with one
 * request in flight nothing else is waiting for the loop (see io/inline-io.ts).
 */
let count = 0;

export function requestStarted(): void {
  count++;
}

export function requestEnded(): void {
  count--;
}

export function requestsInFlight(): number {
  return count;
}
