// Getting a call's media back after its path broke (a change of network, a
// blip that did not heal): when to run an ICE restart, and which side does it.
// One MediaRecovery per call attempt; the controller feeds it what happens and
// carries out what it asks for (it does no I/O and holds no peer connection).
//
// Rules:
// - The path counts as lost on ICE 'disconnected' that lasts DISCONNECTED_GRACE_MS, at
//   once on 'failed', or when the peer's video stopped arriving for a few seconds (the
//   controller watches inbound bytes): after a change of address Chromium took 8-9 s to
//   report 'disconnected' (measured in e2e/resume.test.js), while the media stopped at
//   once. Video that arrives again means the path is back. Only after media flowed once: a
//   call that never connected needs a TURN server, not a restart.
// - Exactly one side restarts, so two restart offers never cross: the side whose name
//   sorts first (JavaScript string order), the same side that wins call glare
//   (docs/protocol.md, Calls). The other side answers the restart offer like any
//   renegotiation.
// - A lost path may mean a new network, and then our signaling socket may be dead without
//   knowing it (its TCP connection comes from an address we no longer have, and looks open
//   until the server's pong timeout). So both sides first refresh their signaling
//   connection (a resume on a new socket); the side that answers does it a second earlier,
//   so that it is listening again when the restart offer comes. The restarting side sends
//   its offer once its resume is through.
// - No restart while the peer is away (the server said `reconnecting`): it comes back with
//   a new connection of its own (a reload re-joins with a new offer). After `resumed`, a
//   restart waits REJOIN_GRACE_MS for that re-join offer.
// - A restart that brings no path within RETRY_MS is tried again (its offer may have been
//   lost with a dead socket), up to MAX_RESTARTS times per loss.

export const DISCONNECTED_GRACE_MS = 3000;
/** The answering side refreshes this much earlier than the restarting side. */
export const ANSWERER_LEAD_MS = 1000;
export const RETRY_MS = 5000;
export const MAX_RESTARTS = 5;
export const REJOIN_GRACE_MS = 1500;

export class MediaRecovery {
  #restarter;
  #after;
  #canRestart;
  #restart;
  #refreshSignaling;
  #log;

  /** performance.now() when the path was lost, or null while it is up. */
  #lostAt = null;
  /** Bumped by every timer set and every change: only the latest timer acts. */
  #seq = 0;
  #refreshed = false;
  #restarts = 0;
  #waitingForSignaling = false;

  /**
   * @param {object} o
   * @param {boolean} o.restarter whether this side runs the restarts
   * @param {(ms: number, fn: () => void) => void} o.after a timer that dies with the call
   * @param {() => boolean} o.canRestart signaling is up and the peer is here
   * @param {() => void} o.restart send an ICE restart offer
   * @param {() => boolean} o.refreshSignaling reconnect the signaling socket; false if it
   *   was not open (it is reconnecting on its own then)
   * @param {(...args: unknown[]) => void} [o.log]
   */
  constructor({ restarter, after, canRestart, restart, refreshSignaling, log = () => {} }) {
    this.#restarter = restarter;
    this.#after = after;
    this.#canRestart = canRestart;
    this.#restart = restart;
    this.#refreshSignaling = refreshSignaling;
    this.#log = log;
  }

  get restarter() {
    return this.#restarter;
  }

  /** True while the media path is lost. */
  get lost() {
    return this.#lostAt !== null;
  }

  /** ICE went 'disconnected' (`failed` false) or 'failed'. */
  pathLost(failed) {
    if (this.#lostAt === null) {
      this.#lostAt = performance.now();
      this.#refreshed = false;
      this.#restarts = 0;
      const grace = failed ? 0 : DISCONNECTED_GRACE_MS - (this.#restarter ? 0 : ANSWERER_LEAD_MS);
      this.#schedule(grace);
    } else if (failed && !this.#refreshed) {
      this.#schedule(0);
    }
  }

  /**
   * The peer's video has not arrived for a few seconds though it did before (ICE may not
   * have noticed yet): the path is lost, no further grace. The restarting side waits
   * ANSWERER_LEAD_MS, as the other side saw the same stall and refreshes first.
   */
  mediaStalled() {
    if (this.#lostAt !== null) return;
    this.#lostAt = performance.now();
    this.#refreshed = false;
    this.#restarts = 0;
    this.#schedule(this.#restarter ? ANSWERER_LEAD_MS : 0);
  }

  /** The peer's video arrives: whatever ICE said, the path works. */
  mediaFlowing() {
    this.pathBack();
  }

  /** Media flows again. */
  pathBack() {
    if (this.#lostAt === null) return;
    this.#log(`media path back after ${Math.round(performance.now() - this.#lostAt)} ms, ${this.#restarts} ICE restart(s)`);
    this.#lostAt = null;
    this.#seq += 1;
    this.#waitingForSignaling = false;
  }

  /** The call moved to a new peer connection (re-join): its own state starts over. */
  reset() {
    this.#lostAt = null;
    this.#seq += 1;
    this.#waitingForSignaling = false;
  }

  /** Our signaling session is (back) up: a restart that waited for it can go. */
  signalingReady() {
    if (this.#lostAt !== null && this.#waitingForSignaling) this.#schedule(0);
  }

  /** The server said the peer is back (`resumed`): give its re-join offer a moment first. */
  peerBack() {
    if (this.#lostAt !== null) this.#schedule(REJOIN_GRACE_MS);
  }

  #schedule(ms) {
    this.#seq += 1;
    const seq = this.#seq;
    this.#after(ms, () => {
      if (seq === this.#seq) this.#step();
    });
  }

  #step() {
    if (this.#lostAt === null) return;
    if (!this.#refreshed) {
      this.#refreshed = true;
      if (this.#refreshSignaling()) {
        // The answering side is done: it listens on a fresh socket. The restarting side
        // goes on once its resume is through (signalingReady).
        this.#waitingForSignaling = this.#restarter;
        return;
      }
    }
    if (!this.#restarter) return;
    if (!this.#canRestart()) {
      // Signaling down or the peer away: signalingReady / peerBack bring us back.
      this.#waitingForSignaling = true;
      return;
    }
    this.#waitingForSignaling = false;
    if (this.#restarts >= MAX_RESTARTS) {
      this.#log('gave up on ICE restarts for this loss');
      return;
    }
    this.#restarts += 1;
    this.#restart();
    this.#schedule(RETRY_MS);
  }
}
