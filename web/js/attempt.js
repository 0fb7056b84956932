// One call attempt: one try at a call with one peer, from the first offer (ours
// or theirs) until it ends. It holds what the controller knows about that try,
// owns everything that must stop with it (its peer connection and its timers)
// and knows when it is over, so no step of an ended attempt touches the next one.
//
// Code that outlives a moment of the attempt goes through it:
//   after / every   timers, cleared when the attempt closes
//   whileOpen(fn)   event handlers and callbacks, no-ops once it is closed
//   step(promise)   an awaited step; its result or error is dropped once it is closed

export class CallAttempt {
  /** Who the call is with. */
  peer;
  /** 'caller': we made the offer; 'callee': we answer theirs. */
  role;
  /** How far the attempt got (a CallState; never idle, that is "no attempt"). */
  state;
  /** The peer's offer, kept for a callee until it accepts. */
  offer;
  /** The attempt's PeerCall; it is closed with the attempt. */
  peerCall;
  /**
   * Our ICE candidates, held until our offer or answer is out so that the
   * server has paired us before the first one reaches it; null once they flow.
   */
  heldCandidates = [];
  /** ICE found no path; a caller says so once answered, not while it still rings. */
  iceFailed = false;
  /** The peer connection's icecandidateerror events (ice-diagnosis.js), set by the controller. */
  iceErrors = null;
  /** The last getStats summary: the next one computes rates from it. */
  lastStats = null;
  /** Date.now() when media first flowed (kept across a reload), or null. */
  since = null;
  /** The server told us the peer's connection dropped (`reconnecting`) and not yet `resumed`. */
  peerAway = false;
  /**
   * Fingerprints of the peer's connections that are gone (replaced by a re-join):
   * an offer or answer still carrying one is late and is dropped.
   */
  staleFingerprints = new Set();
  /** Stats samples in a row in which no inbound video arrived. */
  stalledSamples = 0;
  /** The media recovery of this call (recovery.js), set by the controller. */
  recovery = null;

  #createPeerCall;

  #closed = false;
  #timeouts = new Set();
  #intervals = new Set();

  /**
   * @param {object} init
   * @param {string} init.peer
   * @param {'caller' | 'callee'} init.role
   * @param {string} init.state
   * @param {object | null} [init.offer]
   * @param {(attempt: CallAttempt) => {close(): void}} init.createPeerCall makes the
   *   peer connection; it gets the attempt so its callbacks can be bound to it (whileOpen)
   */
  constructor({ peer, role, state, offer = null, createPeerCall }) {
    this.peer = peer;
    this.role = role;
    this.state = state;
    this.offer = offer;
    this.#createPeerCall = createPeerCall;
    this.peerCall = createPeerCall(this);
  }

  /**
   * The same call on a new peer connection (a re-join after a reload): the old
   * one is closed and forgotten, our candidates are held again until the next
   * description is out, and stats start over. Returns the new PeerCall.
   */
  replacePeerCall() {
    if (this.#closed) return this.peerCall;
    const old = this.peerCall;
    if (old.remoteFingerprint) this.staleFingerprints.add(old.remoteFingerprint);
    old.close();
    this.heldCandidates = [];
    this.lastStats = null;
    this.stalledSamples = 0;
    this.iceFailed = false;
    this.peerCall = this.#createPeerCall(this);
    return this.peerCall;
  }

  /** True once the attempt has ended; nothing it started may act any more. */
  get closed() {
    return this.#closed;
  }

  /** Run `fn` once after `ms`, unless the attempt is over by then. */
  after(ms, fn) {
    if (this.#closed) return;
    const id = setTimeout(() => {
      this.#timeouts.delete(id);
      fn();
    }, ms);
    this.#timeouts.add(id);
  }

  /** Run `fn` every `ms` until the attempt is over. */
  every(ms, fn) {
    if (this.#closed) return;
    this.#intervals.add(setInterval(fn, ms));
  }

  /** `fn`, but doing nothing once the attempt is over (for events of its peer connection). */
  whileOpen(fn) {
    return (...args) => (this.#closed ? undefined : fn(...args));
  }

  /**
   * Await `work` as a step of this attempt: it settles like `work` while the
   * attempt is open. Once the attempt is closed the outcome, value or error, is
   * dropped and the returned promise never settles, so the code after the
   * `await` (and its catch) runs only for a live attempt.
   */
  step(work) {
    // A fresh pending promise each time: one shared forever-pending promise
    // would keep every dropped continuation reachable.
    const dropped = () => new Promise(() => {});
    return Promise.resolve(work).then(
      (value) => (this.#closed ? dropped() : value),
      (err) => (this.#closed ? dropped() : Promise.reject(err)),
    );
  }

  /** End the attempt: stop its timers and close its peer connection. Safe to call again. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const id of this.#timeouts) clearTimeout(id);
    for (const id of this.#intervals) clearInterval(id);
    this.#timeouts.clear();
    this.#intervals.clear();
    this.peerCall.close();
  }
}
