import type { Duplex } from 'node:stream';

/**
 * Ends the socket, and destroys it if it is not closed within `ms`. The timer keeps the process
 * alive: with its input paused, the socket is no longer an active handle, and a server that is
 * stopping must not exit before the connection is closed.
 */
export function endSoon(socket: Duplex, ms: number): void {
  socket.end();
  const timer = setTimeout(() => socket.destroy(), ms);
  socket.once('close', () => clearTimeout(timer));
}
