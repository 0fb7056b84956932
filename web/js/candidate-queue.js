// Remote ICE candidates that arrive before the remote description is set.
//
// Candidates flow from the caller as soon as its offer is out, so the callee
// (still ringing, no remote description yet) and the caller (answer not yet
// in) both see candidates they cannot add. addIceCandidate would reject them;
// instead they wait here and are applied, in order, once the description is set.

export class CandidateQueue {
  /** @type {unknown[]} */
  #pending = [];
  #open = false;
  #apply;
  #onError;
  #limit;

  /**
   * @param {(candidate: unknown) => Promise<void>} apply adds one candidate
   *   (e.g. `c => pc.addIceCandidate(c)`).
   * @param {{limit?: number, onError?: (err: unknown, candidate: unknown) => void}} [options]
   *   `limit` bounds memory if a peer floods us; `onError` hears about a
   *   candidate that could not be added (one bad candidate must not end a call).
   */
  constructor(apply, { limit = 500, onError = () => {} } = {}) {
    this.#apply = apply;
    this.#onError = onError;
    this.#limit = limit;
  }

  /** Number of candidates waiting. */
  get size() {
    return this.#pending.length;
  }

  /** True once open() was called: candidates are applied straight away. */
  get isOpen() {
    return this.#open;
  }

  /** Add a candidate now if open, else keep it for later. */
  async add(candidate) {
    if (!this.#open) {
      if (this.#pending.length < this.#limit) this.#pending.push(candidate);
      return;
    }
    await this.#applyOne(candidate);
  }

  /** The remote description is set: apply everything waiting, then pass through. */
  async open() {
    this.#open = true;
    while (this.#pending.length > 0) {
      await this.#applyOne(this.#pending.shift());
    }
  }

  /** Forget everything (call ended). */
  clear() {
    this.#pending = [];
    this.#open = false;
  }

  async #applyOne(candidate) {
    try {
      await this.#apply(candidate);
    } catch (err) {
      this.#onError(err, candidate);
    }
  }
}
