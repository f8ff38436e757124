// Type declarations of herald.js, the browser client of Herald.

export type TransportName = "ws" | "sse" | "poll";

export interface Options {
  /** A user's JWT or the API key. */
  token?: string;
  /** Called for a token before connecting and 30 s before the current one expires. */
  getToken?: () => string | Promise<string>;
  /** Transports to try, in order. Default ["ws", "sse", "poll"]. */
  transports?: TransportName[];
  /** The server's heartbeat in ms (sse.heartbeat, default 15000); silence for twice it is a dead connection. */
  heartbeat?: number;
  /** How long a transport may take to say it is connected before the next is tried, in ms. Default 5000. */
  connectTimeout?: number;
  /** Seconds a poll may wait on the server. Default 25. */
  pollTimeout?: number;
  /** Reconnection backoff bounds in ms (with jitter). Defaults 500 and 15000. */
  minDelay?: number;
  maxDelay?: number;
  /** On a fallback transport, try the better ones again after this many ms. Default 120000. */
  upgradeAfter?: number;
  /** Remember the transport that worked, per origin, for the tab's session. Default true. */
  remember?: boolean;
}

/** A message as the server sends it. */
export interface Envelope<T = unknown> {
  channel: string;
  offset?: number;
  epoch?: string;
  id?: string;
  event: string;
  data: T;
  time?: string;
  from?: { user: string };
}

export interface Position {
  /** The last offset handled (null: none yet, from the head). */
  offset: number | null;
  epoch: string;
}

export interface PublishResult {
  channel: string;
  offset: number;
  epoch: string;
  id: string;
}

export interface ResetEvent {
  channel: string;
  reason: "trimmed" | "epoch_changed" | "unknown_position";
  epoch: string;
  resume_after: number;
  head: number;
}

export interface Member {
  user: string;
  attrs?: Record<string, unknown>;
  joined_at: string;
  sessions: number;
  state?: unknown;
}

export class HeraldError extends Error {
  /** The HTTP status of the error (401, 403, 429…). */
  code: number;
  retry_after?: number;
  channel?: string;
}

type Off = () => void;

export class Subscription {
  readonly channel: string;
  epoch: string;
  offset: number | null;
  /** Messages of an event name; "*" for every message. */
  on<T = unknown>(event: string, fn: (data: T, env: Envelope<T>) => void): Off;
  on(event: "*", fn: (env: Envelope) => void): Off;
  on(event: "reset", fn: (e: ResetEvent) => void): Off;
  on(event: "join" | "leave" | "state" | "online" | "offline", fn: (member: Member, env: Envelope<Member>) => void): Off;
  off(event: string, fn: (...args: any[]) => void): void;
  position(): Position;
  history(opts?: { since?: number; limit?: number }): Promise<{ channel: string; epoch: string; head: number; messages: Envelope[]; next: number; reset: boolean }>;
  presence(): Promise<{ channel: string; members: Member[]; count: number; sessions: number }>;
  /** Sets this user's short-lived state on the channel (typing); null clears it. ttl in seconds. */
  signal(state: unknown, opts?: { ttl?: number }): Promise<unknown>;
  unsubscribe(): void;
}

export type State = "connecting" | "connected" | "disconnected" | "closed";

export class Client {
  readonly url: string;
  /** The transport in use ("" before the first connection). */
  readonly transport: TransportName | "";
  /** The session id the server gave (continued across reconnects and transports). */
  readonly session: string;
  readonly state: State;
  subscribe(channel: string, from?: { since?: number; epoch?: string }): Subscription;
  history(channel: string, opts?: { since?: number; limit?: number }): ReturnType<Subscription["history"]>;
  presence(channel: string): ReturnType<Subscription["presence"]>;
  publish<T = unknown>(channel: string, event: string, data: T, opts?: { excludeSelf?: boolean; idempotencyKey?: string; ephemeral?: boolean }): Promise<PublishResult>;
  on(event: "connected", fn: (e: { transport: TransportName; session: string }) => void): Off;
  on(event: "disconnected", fn: (e: { transport: TransportName; reason: string }) => void): Off;
  on(event: "transport", fn: (name: TransportName) => void): Off;
  on(event: "state", fn: (state: State) => void): Off;
  on(event: "error", fn: (err: Error) => void): Off;
  /** A token from getToken is in use; on a WebSocket, expires is its new expiry as the server accepted it. */
  on(event: "token", fn: (e: { expires: string }) => void): Off;
  off(event: string, fn: (...args: any[]) => void): void;
  close(): void;
}

export function connect(url: string, opts?: Options): Client;
export const version: string;

declare const Herald: { connect: typeof connect; version: string; Client: typeof Client; Subscription: typeof Subscription; HeraldError: typeof HeraldError };
export as namespace Herald;
