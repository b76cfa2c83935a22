/**
 * What one connection may make the server hold, on top of the server-wide DataBudget: requests
 * and data in flight, unread replies, and how long it may stall while others wait.
 */

export interface SessionLimits {
  /** Requests in flight at once on one connection. */
  maxInFlightRequests: number;
  /** Bytes of READ and WRITE data in flight at once on one connection. */
  maxInFlightBytes: number;
  /** Reply bytes queued for a client that does not read them. */
  maxUnreadReplies: number;
  /**
   * While requests wait for the server's data budget: a client that takes none of its queued
   * replies, or sends none of a begun write payload, this long is dropped.
   */
  stallTimeoutMs: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  maxInFlightRequests: 256,
  maxInFlightBytes: 64 * 1024 * 1024,
  maxUnreadReplies: 16 * 1024 * 1024,
  stallTimeoutMs: 30_000,
};

/** How long a stopping server keeps answering late requests ESHUTDOWN before it closes. */
export const SHUTDOWN_GRACE_MS = 250;
