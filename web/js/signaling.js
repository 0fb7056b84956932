// The signaling connection: one WebSocket carrying JSON messages, reopened with
// exponential backoff whenever it drops. It knows nothing about calls or the
// page; it reports what happens as events:
//
//   'open'    detail: { reconnect: boolean }   socket is up (again)
//   'message' detail: the parsed message object
//   'down'    detail: { code, reason, retryInMs, attempt, everOpened }  socket is gone,
//             another attempt follows in retryInMs
//   'garbage' detail: the raw text of a frame that is not a JSON message
//   'replaced' detail: { reason }  the server closed us with 4000: our session was
//             resumed on another connection (another tab or device); no reconnect follows

import { parseMessage } from './protocol.js';

/** Close code of a session taken over by a resume elsewhere (docs/protocol.md, Resume). */
export const CLOSE_REPLACED = 4000;
/**
 * Our own close code for a socket we give up on while we connect again (refresh).
 * Not 1000: the server frees a resumable name at once on a normal closure, and
 * any other code holds it for the resume that follows.
 */
const CLOSE_REFRESH = 4001;
/** An abandoned socket still open this long after a refresh is closed by us. */
const ABANDON_CLOSE_MS = 10_000;

/**
 * Delay before reconnect attempt number `attempt` (0-based): doubles from
 * `baseMs` up to `maxMs`, with jitter so a restarted server is not hit by
 * every client in the same millisecond.
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 8000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(ceiling * (0.5 + 0.5 * random()));
}

export class Signaling extends EventTarget {
  #url;
  #WebSocketImpl;
  #delay;
  /** @type {WebSocket | null} */
  #ws = null;
  /** Consecutive failed attempts since the socket was last open. */
  #attempt = 0;
  #timer = null;
  /** False after stop(): no more reconnects. */
  #running = false;
  /** Whether a socket was ever open, so the next open is a reconnect. */
  #everOpened = false;
  /**
   * Sockets given up by refresh() that may still be alive: what the server sent on one
   * before the resume on the new socket took the session over is still ours.
   */
  #abandoned = new Set();

  /**
   * @param {string} url ws:// or wss:// URL
   * @param {{WebSocketImpl?: typeof WebSocket, delay?: (attempt: number) => number}} [options]
   */
  constructor(url, { WebSocketImpl = globalThis.WebSocket, delay = backoffDelay } = {}) {
    super();
    this.#url = url;
    this.#WebSocketImpl = WebSocketImpl;
    this.#delay = delay;
  }

  get isOpen() {
    return this.#ws !== null && this.#ws.readyState === this.#WebSocketImpl.OPEN;
  }

  /** Connect, and keep reconnecting until stop(). */
  start() {
    if (this.#running) return;
    this.#running = true;
    this.#connect();
  }

  stop() {
    this.#running = false;
    clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#ws) {
      const ws = this.#ws;
      this.#ws = null;
      ws.close(1000);
    }
  }

  /**
   * Give up on the current socket and connect again at once, without waiting
   * for it to fail. For when the socket may be dead without knowing it: after
   * a change of network, a TCP connection from an address we no longer have
   * looks open until the server's pong timeout. The old socket is ignored from
   * now on; the resume on the new one takes the session over from it.
   */
  refresh() {
    if (!this.#running || !this.isOpen) return;
    const old = this.#ws;
    this.#ws = null;
    this.#abandoned.add(old);
    const timer = setTimeout(() => {
      this.#abandoned.delete(old);
      if (old.readyState === this.#WebSocketImpl.OPEN) old.close(CLOSE_REFRESH, 'reconnecting');
    }, ABANDON_CLOSE_MS);
    timer?.unref?.(); // under Node (unit tests) the timer must not keep the process alive
    this.#connect();
  }

  /** Send one message; false if the socket is not open (nothing is queued). */
  send(message) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(message));
    return true;
  }

  #connect() {
    this.#timer = null;
    let ws;
    try {
      ws = new this.#WebSocketImpl(this.#url);
    } catch (err) {
      // A malformed URL never gets better; still report it like a drop.
      this.#scheduleRetry(0, String(err));
      return;
    }
    this.#ws = ws;
    ws.addEventListener('open', () => {
      if (this.#ws !== ws) return;
      this.#attempt = 0;
      const reconnect = this.#everOpened;
      this.#everOpened = true;
      this.dispatchEvent(new CustomEvent('open', { detail: { reconnect } }));
    });
    ws.addEventListener('message', (event) => {
      if (this.#ws !== ws && !this.#abandoned.has(ws)) return;
      const message = parseMessage(event.data);
      if (message === null) {
        this.dispatchEvent(new CustomEvent('garbage', { detail: event.data }));
        return;
      }
      this.dispatchEvent(new CustomEvent('message', { detail: message }));
    });
    ws.addEventListener('close', (event) => {
      // An abandoned socket ends quietly (the server closes it with 4000 on the takeover).
      if (this.#abandoned.delete(ws) || this.#ws !== ws) return;
      this.#ws = null;
      if (event.code === CLOSE_REPLACED) {
        // Another connection has our session; reconnecting would take it back.
        this.#running = false;
        this.dispatchEvent(new CustomEvent('replaced', { detail: { reason: event.reason } }));
        return;
      }
      this.#scheduleRetry(event.code, event.reason);
    });
    // 'error' is always followed by 'close'; nothing to do here.
  }

  #scheduleRetry(code, reason) {
    if (!this.#running) return;
    const retryInMs = this.#delay(this.#attempt);
    const attempt = this.#attempt;
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#connect(), retryInMs);
    this.dispatchEvent(
      new CustomEvent('down', {
        detail: { code, reason, retryInMs, attempt, everOpened: this.#everOpened },
      }),
    );
  }
}
