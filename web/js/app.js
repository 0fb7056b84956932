// The call controller: the one place that knows the call state (CallState, in
// call-state.js). It reacts to server messages (from Signaling), to clicks (from
// the UI's handlers) and to the peer connection (PeerCall events), and tells the
// UI what to show. Each call attempt is a CallAttempt that owns its timers and
// its peer connection; what an attempt started stops when it closes.
//
// Calls survive what they can (docs/protocol.md, Resume):
// - Every login is resumable; name, resume token and call are kept per tab
//   (SessionStore). When the signaling socket drops, the call and its media go
//   on, a hint says we are reconnecting, and the new socket resumes the session
//   with the token (naming our call peer, so a restarted server can restore it).
// - A reloaded page resumes the name from the store and re-joins its call: a new
//   RTCPeerConnection and a new offer to the same peer. The peer tells a re-join
//   from a renegotiation by the offer's DTLS fingerprint (see #onOffer) and
//   answers it on a new connection of its own, without asking the user.
// - A broken media path is repaired with an ICE restart (recovery.js).
// - Close code 4000 (the session was resumed elsewhere) stops this page.

import {
  checkName,
  describeError,
  describeLeave,
  describeLoginFailure,
  endsCallAttempt,
  msg,
  presenceChanges,
} from './protocol.js';
import { CallAttempt } from './attempt.js';
import { PeerCall, fingerprintOf } from './call.js';
import { IceErrors, explainFailure } from './ice-diagnosis.js';
import { CallState, isAnswered } from './call-state.js';
import { MediaRecovery } from './recovery.js';
import { SessionStore } from './session-store.js';
import { formatDuration, formatStats, qualityLevel, summarizeStats } from './stats.js';
import { backoffDelay } from './signaling.js';

const STATS_INTERVAL_MS = 1000;
const TIMER_INTERVAL_MS = 500;
/** Answered but no media path after this long: the attempt ends, saying why (ice-diagnosis.js). */
const CONNECT_TIMEOUT_MS = 20_000;
/** Stats samples in a row with no inbound video byte before the path counts as lost. */
const MEDIA_STALL_SAMPLES = 2;
/** Re-login after a reconnect may find our old session not yet gone. */
const RELOGIN_ATTEMPTS = 6;

export class App {
  #signaling;
  #ui;
  #openMedia;
  #options;
  #log;
  #store;
  /** Ringtone, ringback, notification (ringing.js); a silent stand-in under Node. */
  #ringing;
  /** The call's peer-to-peer extras (peer-features.js): told of each call, connection and toggle. */
  #features;

  /** Our name once logged in (kept across reconnects, and across a reload by the store). */
  #name = null;
  /** The server's resume token for our latest login, or null. */
  #token = null;
  /**
   * The token our latest login was made with. A server killed right after handing out
   * `#token` may not have written it to its data directory yet (it does so within a
   * second), and after its restart it knows only this one; tried once when `#token` is
   * refused.
   */
  #previousToken = null;
  /** The login in flight is the retry with `#previousToken`. */
  #triedPrevious = false;
  /** The token the login in flight carries (null: a fresh login). */
  #sentToken = null;
  /** The page was reloaded in this call (the store's `call`) and has not re-joined it yet. */
  #savedCall = null;
  /** A hang-up made while the server was out of reach, sent once we are back. */
  #pendingLeave = null;
  /** Another tab or device took our session over (close 4000): this page is done. */
  #replaced = false;
  /** The page started from a saved session and has not heard back from the server yet. */
  #reloaded = false;
  /** Counters for tests and debugging (window.duet.state). */
  #counts = { resumes: 0, resumed: 0, rejoins: 0, iceRestarts: 0 };
  /** Name sent in a login not yet answered. */
  #pendingLogin = null;
  /** The user pressed Sign in while the server was out of reach (the retry texts keep saying so). */
  #triedOffline = false;
  #reloginAttempt = 0;
  /** A name a shared link asked to call (`#call=NAME`), dialled once we are signed in. */
  #linkCall = null;
  /** The user signed out: the next socket's open is not news worth a status line. */
  #signedOut = false;
  #reloginTimer = null;
  #iceServers = [];
  #users = new Set();
  #usersTruncated = false;

  /** Resolves to the local MediaStream or null; started at first login. */
  #media = null;
  #localStream = null;
  #micMuted = false;
  #cameraOff = false;

  /**
   * The current call attempt, or null when idle. An attempt is closed exactly
   * when it stops being this one (#endCall, or glare starting the next), so
   * "still open" is "still current".
   * @type {CallAttempt | null}
   */
  #attempt = null;

  constructor({ signaling, ui, openMedia, options = {}, store = new SessionStore(null), ringing = SILENT, features = NO_FEATURES, log = console.debug.bind(console) }) {
    this.#signaling = signaling;
    this.#ringing = ringing;
    this.#features = features;
    this.#ui = ui;
    this.#openMedia = openMedia;
    this.#options = options;
    this.#store = store;
    this.#log = log;
    this.#linkCall = options.call ?? null;

    ui.on({
      login: (raw) => this.login(raw),
      call: (raw) => this.startCall(raw),
      accept: () => this.accept(),
      decline: () => this.decline(),
      hangup: () => this.hangUp(),
      toggleMic: () => this.toggleMic(),
      toggleCamera: () => this.toggleCamera(),
      signOut: () => this.signOut(),
    });
    signaling.addEventListener('open', (e) => this.#onSignalingOpen(e.detail));
    signaling.addEventListener('down', (e) => this.#onSignalingDown(e.detail));
    signaling.addEventListener('replaced', () => this.#onReplaced());
    signaling.addEventListener('message', (e) => this.#onMessage(e.detail).catch((err) => this.#fail(err)));
    signaling.addEventListener('garbage', (e) => this.#log('ignored a non-JSON frame', e.detail));
  }

  /** Read-only snapshot for tests and debugging (window.duet.state). */
  get debugState() {
    const c = this.#attempt;
    return Object.freeze({
      name: this.#name,
      signaling: this.#signaling.isOpen ? 'open' : 'down',
      call: c ? c.state : CallState.IDLE,
      peer: c ? c.peer : null,
      role: c ? c.role : null,
      pc: c ? c.peerCall.pc : null,
      queuedCandidates: c ? c.peerCall.queuedCandidates : 0,
      users: [...this.#users].sort(),
      localStream: this.#localStream,
      micMuted: this.#micMuted,
      cameraOff: this.#cameraOff,
      lastStats: c?.lastStats ?? null,
      peerAway: c ? c.peerAway : false,
      mediaLost: c?.recovery?.lost ?? false,
      replaced: this.#replaced,
      ringing: this.#ringing.state,
      ...this.#counts,
    });
  }

  start() {
    const saved = this.#store.load();
    if (saved) {
      // A reload: take the session back instead of asking for the name again.
      this.#name = saved.name;
      this.#token = saved.token;
      this.#previousToken = saved.previousToken;
      this.#savedCall = saved.call;
      this.#reloaded = true;
      this.#ui.showCallPage(saved.name);
      this.#ui.setCallState(CallState.IDLE);
      const text = saved.call?.answered ? `Rejoining the call with ${saved.call.peer}…` : `Signing in again as ${saved.name}…`;
      this.#ui.setCallStatus(text, 'info');
    } else {
      this.#ui.showLogin();
    }
    this.#ui.setConnection('Connecting to the server…', 'info');
    this.#signaling.start();
  }

  // ---- user actions -------------------------------------------------------

  login(raw) {
    const checked = checkName(raw);
    if (!checked.ok) {
      this.#ui.setLoginStatus(checked.message, 'error');
      return;
    }
    if (!this.#signaling.isOpen) {
      this.#triedOffline = true;
      this.#ui.setLoginStatus('Not connected to the server yet; retrying, try again in a moment.', 'error');
      return;
    }
    // A user gesture: the moment to let the ringtone play and ask to notify.
    this.#ringing.unlock();
    this.#pendingLogin = checked.name;
    this.#ui.setLoginBusy(true);
    this.#ui.setLoginStatus('Signing in…', 'info');
    this.#signaling.send(msg.login(checked.name));
  }

  /** Ring a peer. Once the attempt is over its pending steps are dropped, and this never settles. */
  async startCall(raw) {
    if (this.#attempt || !this.#name) return;
    const checked = checkName(raw);
    if (!checked.ok) {
      this.#ui.setCallStatus(checked.message, 'error');
      return;
    }
    if (!this.#signaling.isOpen) {
      this.#ui.setCallStatus('Not connected to the server; wait for the reconnect.', 'error');
      return;
    }
    const peer = checked.name;
    const attempt = this.#begin(peer, 'caller', CallState.OUTGOING);
    this.#ui.setCallStatus(`Calling ${peer}…`, 'info');
    try {
      await this.#sendDescription(attempt, () => attempt.peerCall.makeOffer(this.#localStream), msg.offer);
    } catch (err) {
      this.#endCall(attempt, `Could not start the call: ${err?.message ?? err}`, 'error');
    }
  }

  /** Answer the ringing call. Once the attempt is over its pending steps are dropped, and this never settles. */
  async accept() {
    const attempt = this.#attempt;
    if (attempt?.state !== CallState.INCOMING) return;
    this.#setState(attempt, CallState.CONNECTING);
    this.#ui.setCallStatus(`Connecting to ${attempt.peer}…`, 'info');
    try {
      await this.#sendDescription(attempt, () => attempt.peerCall.acceptOffer(attempt.offer, this.#localStream), msg.answer);
    } catch (err) {
      this.#endCall(attempt, `Could not answer the call: ${err?.message ?? err}`, 'error', 'hangup');
    }
  }

  decline() {
    const attempt = this.#attempt;
    if (attempt?.state !== CallState.INCOMING) return;
    this.#endCall(attempt, `You declined the call from ${attempt.peer}.`, 'info', 'declined');
  }

  hangUp() {
    const attempt = this.#attempt;
    if (!attempt) return;
    if (attempt.state === CallState.INCOMING) {
      this.decline();
    } else if (attempt.state === CallState.OUTGOING) {
      this.#endCall(attempt, `You cancelled the call to ${attempt.peer}.`, 'info', 'cancelled');
    } else {
      this.#endCall(attempt, `Call with ${attempt.peer} ended.`, 'info', 'hangup');
    }
  }

  /**
   * Give the name up: end any call, close the socket normally (1000: the server frees the
   * name at once instead of holding it for a resume), forget the session, and start over.
   */
  signOut() {
    const name = this.#name;
    if (!name) return;
    if (this.#attempt) this.hangUp();
    clearTimeout(this.#reloginTimer);
    this.#name = null;
    this.#token = null;
    this.#previousToken = null;
    this.#savedCall = null;
    this.#pendingLeave = null;
    this.#pendingLogin = null;
    this.#store.clear();
    this.#setUsers([], false);
    this.#signedOut = true;
    this.#signaling.stop();
    this.#signaling.start();
    this.#ui.showLogin(name);
    this.#ui.setLoginStatus(`Signed out. Sign in again to take calls.`, 'ok');
  }

  /**
   * Ask for the camera and microphone again (after permission was refused or a device
   * was missing); resolves to the new stream or null. The next call uses it.
   */
  async retryMedia() {
    const before = this.#media;
    await before;
    if (this.#media !== before) return this.#media;
    for (const track of this.#localStream?.getTracks() ?? []) track.stop();
    this.#media = this.#startMedia();
    return this.#media;
  }

  toggleMic() {
    this.#micMuted = !this.#micMuted;
    this.#applyToggles();
  }

  toggleCamera() {
    this.#cameraOff = !this.#cameraOff;
    this.#applyToggles();
  }

  // ---- signaling ----------------------------------------------------------

  #onSignalingOpen({ reconnect }) {
    this.#ui.setSignalingUp(true);
    if (this.#name) {
      this.#reloginAttempt = 0;
      this.#relogin();
    } else {
      this.#triedOffline = false;
      this.#ui.setConnection('Connected', 'ok');
      if (reconnect && !this.#signedOut) this.#ui.setLoginStatus('Reconnected to the server.', 'ok');
      this.#signedOut = false;
    }
  }

  /** Take our session back on a new socket: with the token, naming the call we are in. */
  #relogin() {
    this.#reloginTimer = null;
    if (!this.#signaling.isOpen) return;
    this.#pendingLogin = this.#name;
    this.#counts.resumes += 1;
    this.#ui.setConnection(`Signing in again as ${this.#name}…`, 'info');
    // Only an answered call: an unanswered one does not survive a server restart.
    const attempt = this.#attempt;
    const call = attempt && isAnswered(attempt.state) ? attempt.peer : this.#savedCall?.answered ? this.#savedCall.peer : null;
    const resumeToken = this.#triedPrevious ? this.#previousToken : this.#token;
    this.#sentToken = resumeToken;
    this.#signaling.send(msg.login(this.#name, { resumeToken, call }));
  }

  #onSignalingDown({ retryInMs, everOpened }) {
    this.#ui.setSignalingUp(false);
    clearTimeout(this.#reloginTimer);
    this.#pendingLogin = null;
    const seconds = Math.max(1, Math.round(retryInMs / 1000));
    if (this.#name) {
      // The call and its media go on: they do not need the server. Only the hint
      // changes; the call status (maybe why a call ended) stays as it is.
      this.#ui.setConnection(`Reconnecting to the server… (next try in ${seconds} s)`, 'error');
      return;
    }
    const text = this.#triedOffline
      ? `Not connected to the server yet; retrying in ${seconds} s. Sign in once it is back.`
      : everOpened
        ? `Lost the connection to the server; reconnecting in ${seconds} s…`
        : `Cannot reach the server; retrying in ${seconds} s…`;
    this.#ui.setConnection(everOpened ? 'Reconnecting…' : 'Offline', 'error');
    this.#ui.setLoginStatus(text, 'error');
    this.#ui.setLoginBusy(false);
  }

  /** Our session was resumed on another connection (close 4000): stop, and do not take it back. */
  #onReplaced() {
    this.#replaced = true;
    clearTimeout(this.#reloginTimer);
    this.#pendingLeave = null;
    this.#store.clear();
    const attempt = this.#attempt;
    // No leave: the call, if any, goes on where the session went.
    if (attempt) this.#endCall(attempt, '', 'error');
    this.#ui.setSignalingUp(false);
    this.#ui.setConnection('Signed in elsewhere', 'error');
    const text = `Your session${this.#name ? ` as ${this.#name}` : ''} moved to another tab or device; this page no longer receives calls. Reload it to sign in here again.`;
    if (this.#name) this.#ui.setCallStatus(text, 'error');
    else this.#ui.setLoginStatus(text, 'error');
  }

  async #onMessage(m) {
    switch (m.type) {
      case 'login':
        return this.#onLogin(m);
      case 'presence':
      case 'presence-batch':
        return this.#onPresence(m);
      case 'offer':
        return this.#onOffer(m);
      case 'answer':
        return this.#onAnswer(m);
      case 'candidate':
        return this.#onCandidate(m);
      case 'ringing':
        // The callee has our offer and is being asked; until now we only knew we dialled.
        if (this.#attempt?.peer === m.name && this.#attempt.state === CallState.OUTGOING) {
          this.#ui.setCallStatus(`Ringing ${m.name}…`, 'info');
          this.#ringing.ringback();
        }
        return;
      case 'leave':
        return this.#onLeave(m);
      case 'reconnecting':
        return this.#onPeerReconnecting(m);
      case 'resumed':
        return this.#onPeerResumed(m);
      case 'error':
        return this.#onError(m);
      default:
        this.#log('ignored message of unknown type', m.type);
    }
  }

  #onLogin(m) {
    const again = this.#name !== null;
    const attempted = this.#pendingLogin;
    this.#pendingLogin = null;
    if (m.success === true) {
      this.#name = typeof m.name === 'string' ? m.name : attempted;
      this.#previousToken = again ? this.#sentToken : null;
      this.#token = typeof m.resumeToken === 'string' ? m.resumeToken : null;
      this.#triedPrevious = false;
      this.#iceServers = Array.isArray(m.iceServers) ? m.iceServers : [];
      this.#setUsers(Array.isArray(m.users) ? m.users : [], !!m.usersTruncated);
      this.#ui.setConnection('Connected', 'ok');
      this.#ui.setLoginBusy(false);
      this.#ui.setLoginStatus('', 'info');
      this.#ui.showCallPage(this.#name);
      this.#media ??= this.#startMedia();
      this.#saveSession();
      if (again) this.#onResumed(m.resumed === true);
      else {
        this.#ui.setCallState(CallState.IDLE);
        this.#ui.setCallStatus('Ready. Pick someone online or type a name to call.', 'ok');
        this.#dialLink();
      }
      return;
    }
    const text = describeLoginFailure(m);
    if (again) {
      // Our old session may linger on the server for a moment after a drop (or, in a
      // cluster, be held on another node).
      if (m.code === 'invalid-token' && this.#previousToken && !this.#triedPrevious) {
        this.#triedPrevious = true;
        this.#relogin();
        return;
      }
      this.#triedPrevious = false;
      if (m.code === 'name-taken' && this.#reloginAttempt < RELOGIN_ATTEMPTS) {
        const delay = backoffDelay(this.#reloginAttempt++);
        this.#ui.setConnection(`${text} Retrying in ${Math.ceil(delay / 1000)} s…`, 'error');
        this.#reloginTimer = setTimeout(() => this.#relogin(), delay);
        return;
      }
      const name = this.#name;
      const attempt = this.#attempt;
      if (attempt) this.#endCall(attempt, '', 'error');
      this.#name = null;
      this.#token = null;
      this.#previousToken = null;
      this.#savedCall = null;
      this.#pendingLeave = null;
      this.#store.clear();
      this.#setUsers([], false);
      this.#ui.setConnection('Connected', 'ok');
      this.#ui.showLogin(name);
      this.#ui.setLoginBusy(false);
      this.#ui.setLoginStatus(`Could not sign in again as ${name}: ${text}`, 'error');
      return;
    }
    this.#ui.setLoginBusy(false);
    this.#ui.setLoginStatus(text, 'error');
  }

  /**
   * We have our session again after a drop or a reload. `resumed`: the server
   * still had it (name, call, and the messages meant for us, which follow);
   * otherwise it is a fresh login and any call we were in is gone on the server.
   */
  #onResumed(resumed) {
    if (resumed) this.#counts.resumed += 1;
    if (this.#pendingLeave) {
      const { peer, reason } = this.#pendingLeave;
      this.#pendingLeave = null;
      this.#signaling.send(msg.leave(peer, reason));
    }
    const attempt = this.#attempt;
    const saved = this.#savedCall;
    const reloaded = this.#reloaded;
    this.#savedCall = null;
    this.#reloaded = false;
    if (attempt) {
      if (!resumed) {
        this.#endCall(attempt, `The server no longer had the call with ${attempt.peer} (it restarted, or we were away too long); the call has ended.`, 'error');
        return;
      }
      attempt.recovery?.signalingReady();
      return;
    }
    if (saved && !saved.answered) {
      // Reloaded while it rang: that attempt cannot go on (its offer is gone with the page).
      if (resumed) this.#signaling.send(msg.leave(saved.peer, saved.role === 'caller' ? 'cancelled' : 'hangup'));
      this.#saveSession();
      this.#ui.setCallStatus(`The call ${saved.role === 'caller' ? 'to' : 'from'} ${saved.peer} was interrupted by the reload.`, 'error');
      return;
    }
    if (saved) {
      if (resumed) {
        this.#rejoin(saved).catch((err) => this.#fail(err));
        return;
      }
      this.#ui.setCallStatus(`Could not rejoin the call with ${saved.peer}: the server no longer had it.`, 'error');
      return;
    }
    if (reloaded) this.#ui.setCallStatus('Ready. Pick someone online or type a name to call.', 'ok');
    this.#dialLink();
  }

  /** A shared link (`/call/NAME`, `#call=NAME`) opened this page, or its hash changed: call. */
  callFromLink(name) {
    this.#linkCall = name;
    if (this.#name && this.#signaling.isOpen && this.#pendingLogin === null) this.#dialLink();
  }

  #dialLink() {
    const name = this.#linkCall;
    this.#linkCall = null;
    if (!name || this.#attempt || !this.#name) return;
    this.#ui.linkUsed?.();
    this.startCall(name).catch((err) => this.#fail(err));
  }

  /** Keep who we are and the call we are in for a reload of this tab. */
  #saveSession() {
    if (this.#replaced || !this.#name) return;
    const a = this.#attempt;
    const call = a
      ? {
          peer: a.peer,
          answered: isAnswered(a.state),
          role: a.role,
          since: a.since,
          fingerprint: a.peerCall.remoteFingerprint,
        }
      : (this.#savedCall ?? null);
    this.#store.save({ name: this.#name, token: this.#token, previousToken: this.#previousToken, call });
  }

  #onPresence(m) {
    for (const [name, online] of presenceChanges(m)) {
      if (name === this.#name) continue;
      if (online) this.#users.add(name);
      else this.#users.delete(name);
    }
    this.#ui.setUsers([...this.#users].sort(byName), { truncated: this.#usersTruncated });
  }

  #setUsers(names, truncated) {
    this.#users = new Set(names.filter((n) => typeof n === 'string' && n !== this.#name));
    this.#usersTruncated = truncated;
    this.#ui.setUsers([...this.#users].sort(byName), { truncated });
  }

  async #onOffer(m) {
    const from = m.name;
    if (typeof from !== 'string' || !m.offer) return;
    const attempt = this.#attempt;
    if (!attempt) {
      this.#begin(from, 'callee', CallState.INCOMING, m.offer);
      this.#ui.setCallStatus(`${from} is calling`, 'info');
      return;
    }
    if (attempt.peer !== from) {
      // The server only pairs free users, so this is a stale message; ignore it.
      this.#log('ignored an offer from', from, 'while in a call with', attempt.peer);
      return;
    }
    if (attempt.state === CallState.OUTGOING) {
      // Both called each other at once. The server paired us; the side with the
      // larger name gives way and answers the other's offer.
      if (this.#name > from) {
        attempt.close();
        this.#begin(from, 'callee', CallState.INCOMING, m.offer);
        await this.accept();
      }
      return;
    }
    if (isAnswered(attempt.state)) await this.#onOfferInCall(attempt, m.offer);
  }

  /**
   * An offer from the peer we are in a call with. It is one of:
   * - a re-join: the peer's page was reloaded and offers from a new RTCPeerConnection.
   *   We tell it by its DTLS fingerprint, which differs from that of the connection we
   *   talk to (each RTCPeerConnection has its own certificate; a renegotiation or an
   *   ICE restart keeps it). The `reconnecting`/`resumed` notices would not do: a
   *   live connection taken over sends no `reconnecting`, and a notice can cross the
   *   offer; the fingerprint is in the offer itself. We answer from a new connection
   *   of our own: the same call, no Accept.
   * - an offer crossing one of ours (both re-joined at once, or it meets our restart
   *   offer): the offer of the side whose name sorts first wins, as in call glare.
   * - otherwise a renegotiation or ICE restart of this connection, answered on it.
   * An offer from a connection of the peer's that was replaced is late: dropped.
   */
  async #onOfferInCall(attempt, offer) {
    const pc = attempt.peerCall;
    const fingerprint = fingerprintOf(offer);
    if (fingerprint && attempt.staleFingerprints.has(fingerprint)) {
      this.#log('dropped an offer from a replaced connection of', attempt.peer);
      return;
    }
    const current = pc.remoteFingerprint;
    if (current !== null && fingerprint !== null && fingerprint !== current) {
      await this.#answerRejoin(attempt, offer);
      return;
    }
    // No remote description yet: we are re-joining ourselves, and so is the peer.
    const crossing = current === null || pc.offerPending;
    if (crossing && this.#name < attempt.peer) {
      this.#log('dropped an offer crossing ours from', attempt.peer);
      return;
    }
    if (current === null) {
      await this.#answerRejoin(attempt, offer);
      return;
    }
    try {
      await this.#sendDescription(attempt, () => pc.acceptOffer(offer), msg.answer);
      this.#saveSession();
    } catch (err) {
      this.#log('could not answer a renegotiation:', err);
    }
  }

  /** The peer re-joins the call from a new connection: answer it from a new one of ours. */
  async #answerRejoin(attempt, offer) {
    this.#counts.rejoins += 1;
    attempt.replacePeerCall();
    this.#wirePeerCall(attempt);
    attempt.recovery.reset();
    attempt.peerAway = false;
    const pc = attempt.peerCall;
    this.#ui.setCallStatus(`${attempt.peer} is back; reconnecting…`, 'info');
    try {
      await this.#sendDescription(attempt, () => pc.acceptOffer(offer, this.#localStream), msg.answer);
      this.#saveSession();
    } catch (err) {
      this.#endCall(attempt, `Could not rejoin ${attempt.peer}: ${err?.message ?? err}`, 'error', 'hangup');
    }
  }

  /** After a reload in a call: the same call with the same peer, on a new connection. */
  async #rejoin(saved) {
    this.#counts.rejoins += 1;
    const attempt = this.#begin(saved.peer, 'caller', CallState.CONNECTING);
    attempt.since = saved.since;
    if (saved.fingerprint) attempt.staleFingerprints.add(saved.fingerprint);
    this.#ui.setCallStatus(`Rejoining the call with ${saved.peer}…`, 'info');
    this.#saveSession();
    try {
      await this.#sendDescription(attempt, () => attempt.peerCall.makeOffer(this.#localStream), msg.offer);
    } catch (err) {
      this.#endCall(attempt, `Could not rejoin the call with ${saved.peer}: ${err?.message ?? err}`, 'error', 'hangup');
    }
  }

  async #onAnswer(m) {
    const attempt = this.#attempt;
    if (!attempt || !m.answer) return;
    if (typeof m.name === 'string' && m.name !== attempt.peer) return;
    const pc = attempt.peerCall;
    // Answers our offer: the call's first, a re-join's or an ICE restart's.
    if (!(attempt.state === CallState.OUTGOING || pc.offerPending)) return;
    const fingerprint = fingerprintOf(m.answer);
    if (fingerprint && attempt.staleFingerprints.has(fingerprint)) return;
    if (attempt.state === CallState.OUTGOING) {
      this.#setState(attempt, CallState.CONNECTING);
      if (attempt.iceFailed) this.#noPath(attempt);
      else this.#ui.setCallStatus(`${attempt.peer} answered; connecting…`, 'info');
    }
    try {
      await attempt.step(pc.applyAnswer(m.answer));
      this.#saveSession();
    } catch (err) {
      if (attempt.since !== null) {
        this.#log('could not apply an answer within the call:', err);
        return;
      }
      this.#endCall(attempt, `The answer from ${attempt.peer} could not be used: ${err?.message ?? err}`, 'error', 'hangup');
    }
  }

  /** The server says the peer's connection dropped; it is held while the peer reconnects. */
  #onPeerReconnecting(m) {
    const attempt = this.#attempt;
    if (!attempt || m.name !== attempt.peer) return;
    attempt.peerAway = true;
    this.#ui.setCallStatus(`${attempt.peer} is reconnecting…`, 'info');
  }

  /** The peer is back on a new connection; the call goes on. */
  #onPeerResumed(m) {
    const attempt = this.#attempt;
    if (!attempt || m.name !== attempt.peer) return;
    const wasAway = attempt.peerAway;
    attempt.peerAway = false;
    attempt.recovery.peerBack();
    if (wasAway) this.#showCallStatus(attempt);
  }

  /** The status line for where the call stands. */
  #showCallStatus(attempt) {
    const peer = attempt.peer;
    switch (attempt.state) {
      case CallState.OUTGOING:
        return this.#ui.setCallStatus(`Calling ${peer}…`, 'info');
      case CallState.INCOMING:
        return this.#ui.setCallStatus(`${peer} is calling`, 'info');
      case CallState.CONNECTING:
        return this.#ui.setCallStatus(`Connecting to ${peer}…`, 'info');
      default:
        if (attempt.recovery.lost) return this.#ui.setCallStatus(`Connection to ${peer} interrupted; reconnecting…`, 'error');
        return this.#ui.setCallStatus(`In a call with ${peer}.`, 'ok');
    }
  }

  async #onCandidate(m) {
    const attempt = this.#attempt;
    if (!attempt || !m.candidate) return;
    if (typeof m.name === 'string' && m.name !== attempt.peer) return;
    await attempt.peerCall.addRemoteCandidate(m.candidate);
  }

  #onLeave(m) {
    const attempt = this.#attempt;
    if (!attempt) return;
    if (typeof m.name === 'string' && m.name !== attempt.peer) return;
    // The peer found no path: so did we; say why from our side.
    if (m.reason === 'no-path' && attempt.state === CallState.CONNECTING) return void this.#noPath(attempt, null);
    // A callee who pressed Accept is in the call, even before media flows.
    const phase = isAnswered(attempt.state) ? 'connected' : 'ringing';
    const text = describeLeave({ reason: m.reason, peer: attempt.peer, role: attempt.role, phase });
    const kind = m.reason === 'hangup' || m.reason === undefined ? 'info' : 'error';
    this.#endCall(attempt, text, kind);
  }

  #onError(m) {
    const attempt = this.#attempt;
    const text = describeError(m);
    if (attempt && endsCallAttempt(m) && (typeof m.name !== 'string' || m.name === attempt.peer)) {
      if (attempt.state === CallState.OUTGOING) {
        this.#endCall(attempt, text, 'error');
        return;
      }
    }
    if (m.code === 'not-in-call') {
      // Late candidates or a leave crossing the peer's own leave: harmless.
      this.#log('server:', m.message);
      return;
    }
    if (m.request === 'candidate') {
      this.#log('server refused a candidate:', m.code, m.message);
      return;
    }
    if (this.#name) this.#ui.setCallStatus(text, 'error');
    else this.#ui.setLoginStatus(text, 'error');
  }

  // ---- call lifecycle -----------------------------------------------------

  /** Start an attempt and make it the current one. */
  #begin(peer, role, state, offer = null) {
    const attempt = new CallAttempt({
      peer,
      role,
      state,
      offer,
      createPeerCall: (a) =>
        new PeerCall({
          iceServers: this.#iceServers,
          relayOnly: !!this.#options.relayOnly,
          log: this.#log,
          sendCandidate: a.whileOpen((candidate) => this.#sendCandidate(a, candidate)),
        }),
    });
    attempt.recovery = new MediaRecovery({
      restarter: this.#name < peer,
      after: (ms, fn) => attempt.after(ms, fn),
      canRestart: () => this.#signaling.isOpen && this.#pendingLogin === null && !attempt.peerAway,
      restart: () => this.#restartIce(attempt),
      // While the peer is away the trouble is on its side; our socket is fine.
      refreshSignaling: () => !attempt.peerAway && this.#refreshSignaling(),
      log: this.#log,
    });
    this.#features.callStarted(peer);
    this.#wirePeerCall(attempt);
    this.#attempt = attempt;
    this.#showState(state, peer);
    if (state === CallState.CONNECTING) this.#startConnectTimer(attempt);
    return attempt;
  }

  /** Listen to the attempt's current peer connection (again after a re-join replaced it). */
  #wirePeerCall(attempt) {
    const pc = attempt.peerCall;
    // Before the connection's first offer or answer: its data channels go into it.
    this.#features.connection(pc.pc);
    attempt.iceErrors = new IceErrors(pc.pc);
    const live = (fn) => attempt.whileOpen((e) => (attempt.peerCall === pc ? fn(e) : undefined));
    /** This connection had media: losing its path is for the recovery, not "TURN needed". */
    let hadMedia = false;
    pc.addEventListener('remotestream', live((e) => this.#ui.setRemoteStream(e.detail)));
    pc.addEventListener(
      'connected',
      live(() => {
        hadMedia = true;
        this.#onMediaConnected(attempt);
      }),
    );
    pc.addEventListener(
      'icefailed',
      live(() => {
        if (hadMedia) return;
        attempt.iceFailed = true;
        // While still ringing, keep "Calling …" up; say it once answered.
        if (attempt.state !== CallState.OUTGOING) this.#noPath(attempt);
      }),
    );
    pc.addEventListener(
      'statechange',
      live(({ detail: { connectionState, iceConnectionState } }) => {
        if (!hadMedia) return;
        const failed = iceConnectionState === 'failed' || connectionState === 'failed';
        if (failed || iceConnectionState === 'disconnected' || connectionState === 'disconnected') {
          const already = attempt.recovery.lost;
          attempt.recovery.pathLost(failed);
          if (!already && !attempt.peerAway) {
            this.#ui.setCallStatus(`Connection to ${attempt.peer} interrupted; reconnecting…`, 'error');
          }
        } else if (iceConnectionState === 'connected' || iceConnectionState === 'completed') {
          attempt.recovery.pathBack();
        }
      }),
    );
  }

  /** Send an ICE restart offer within the call (MediaRecovery decides when). */
  async #restartIce(attempt) {
    this.#counts.iceRestarts += 1;
    this.#log('ICE restart', this.#counts.iceRestarts, 'with', attempt.peer);
    try {
      await this.#sendDescription(attempt, () => attempt.peerCall.makeRestartOffer(), msg.offer);
    } catch (err) {
      this.#log('ICE restart failed:', err);
    }
  }

  /** Reconnect the signaling socket now (it may be dead after a change of network). */
  #refreshSignaling() {
    if (!this.#signaling.isOpen || this.#pendingLogin !== null) return false;
    this.#log('refreshing the signaling connection');
    this.#signaling.refresh();
    return true;
  }

  /**
   * Our offer or answer (`make`, run once local media is settled), then the
   * candidates held back for it. Throws what `make` throws; does nothing more
   * once the attempt is over.
   */
  async #sendDescription(attempt, make, message) {
    const pc = attempt.peerCall;
    // Our candidates for this description must not reach the peer before it does.
    attempt.heldCandidates ??= [];
    await attempt.step(this.#media);
    const description = await attempt.step(make());
    // A re-join replaced the connection meanwhile: this description is of no use.
    if (attempt.peerCall !== pc) return;
    this.#signaling.send(message(attempt.peer, description));
    const held = attempt.heldCandidates ?? [];
    attempt.heldCandidates = null;
    for (const candidate of held) this.#sendCandidate(attempt, candidate);
  }

  #sendCandidate(attempt, candidate) {
    if (attempt.heldCandidates) attempt.heldCandidates.push(candidate);
    else this.#signaling.send(msg.candidate(attempt.peer, candidate));
  }

  #setState(attempt, state) {
    attempt.state = state;
    // Attempts only move forward, so this timer starts at most once per attempt.
    if (state === CallState.CONNECTING) this.#startConnectTimer(attempt);
    this.#showState(state, attempt.peer);
  }

  /** Every change of call state goes to the page and to the ringing. */
  #showState(state, peer = null) {
    if (state === CallState.INCOMING) this.#ringing.incoming(peer);
    else if (state !== CallState.OUTGOING) this.#ringing.stop();
    this.#ui.setCallState(state, peer);
  }

  #startConnectTimer(attempt) {
    attempt.after(CONNECT_TIMEOUT_MS, () => {
      if (attempt.state === CallState.CONNECTING) this.#noPath(attempt);
    });
  }

  /**
   * No media path: say why and, if media never flowed, end the attempt (telling the peer
   * `leave`, unless it told us).
   */
  async #noPath(attempt, leave = 'no-path') {
    const { pc } = attempt.peerCall;
    const why = explainFailure({ pc, peer: attempt.peer, iceServers: this.#iceServers, iceErrors: attempt.iceErrors });
    const { text } = await attempt.step(why);
    if (attempt.state === CallState.CONNECTING) this.#endCall(attempt, text, 'error', leave);
    else this.#ui.setCallStatus(text, 'error');
  }

  #onMediaConnected(attempt) {
    attempt.recovery.pathBack();
    if (attempt.state !== CallState.CONNECTED) {
      this.#setState(attempt, CallState.CONNECTED);
      // Kept across a reload (the store), so the timer counts the whole call.
      attempt.since ??= Date.now();
      attempt.every(TIMER_INTERVAL_MS, () => this.#ui.setTimer(formatDuration(Date.now() - attempt.since)));
      attempt.every(STATS_INTERVAL_MS, () => this.#sampleStats(attempt));
      this.#ui.setTimer(formatDuration(Date.now() - attempt.since));
      this.#ui.setStats('waiting for video…');
      this.#ui.setQuality?.(0);
    }
    this.#ui.setCallStatus(`In a call with ${attempt.peer}.`, 'ok');
    this.#saveSession();
  }

  async #sampleStats(attempt) {
    try {
      const pc = attempt.peerCall;
      const report = await attempt.step(pc.pc.getStats());
      if (attempt.peerCall !== pc) return; // a re-join replaced it meanwhile
      const previous = attempt.lastStats;
      attempt.lastStats = summarizeStats(report.values(), previous);
      this.#ui.setStats(formatStats(attempt.lastStats));
      this.#ui.setQuality?.(qualityLevel(attempt.lastStats));
      this.#watchInbound(attempt, previous, attempt.lastStats);
    } catch (err) {
      this.#log('getStats failed', err);
    }
  }

  /**
   * The peer's video stopping is the first sign of a broken path (ICE notices seconds
   * later). Only once video arrived on this connection: a peer without a camera sends none.
   */
  #watchInbound(attempt, previous, now) {
    if (previous?.bytesReceived == null || now.bytesReceived === null) return;
    if (now.bytesReceived > previous.bytesReceived) {
      attempt.stalledSamples = 0;
      const wasLost = attempt.recovery.lost;
      attempt.recovery.mediaFlowing();
      if (wasLost && !attempt.peerAway) this.#showCallStatus(attempt);
      return;
    }
    attempt.stalledSamples += 1;
    if (attempt.stalledSamples !== MEDIA_STALL_SAMPLES) return;
    const already = attempt.recovery.lost;
    attempt.recovery.mediaStalled();
    if (!already && !attempt.peerAway) this.#ui.setCallStatus(`Connection to ${attempt.peer} interrupted; reconnecting…`, 'error');
  }

  /**
   * End `attempt` (the current one) and show `text`; nothing if it is already over.
   * @param {string | null} [leave] the reason to tell the peer; null when the
   *   peer or the server ended it
   */
  #endCall(attempt, text, kind, leave = null) {
    if (attempt.closed) return;
    // Out of reach of the server: the leave goes once we are back (#onResumed).
    if (leave && !this.#signaling.send(msg.leave(attempt.peer, leave))) {
      this.#pendingLeave = { peer: attempt.peer, reason: leave };
    }
    attempt.close();
    this.#attempt = null;
    this.#features.callEnded();
    this.#saveSession();
    this.#ui.setRemoteStream(null);
    this.#ui.setTimer(null);
    this.#ui.setStats(null);
    this.#ui.setQuality?.(null);
    this.#showState(CallState.IDLE);
    this.#ui.setCallStatus(text, kind);
  }

  // ---- local media --------------------------------------------------------

  async #startMedia() {
    const { stream, problem } = await this.#openMedia();
    this.#localStream = stream;
    this.#ui.setLocalStream(stream);
    this.#features.localStream(stream);
    this.#ui.setMediaAvailable({
      audio: !!stream?.getAudioTracks().length,
      video: !!stream?.getVideoTracks().length,
    });
    this.#applyToggles();
    // A refused or missing device can be tried again from the lobby (or the Devices panel).
    this.#ui.setMediaRetry?.(!!problem, () => this.retryMedia());
    if (problem && !this.#attempt) this.#ui.setCallStatus(problem, 'error');
    else if (problem) this.#log(problem);
    return stream;
  }

  #applyToggles() {
    for (const track of this.#localStream?.getAudioTracks() ?? []) track.enabled = !this.#micMuted;
    for (const track of this.#localStream?.getVideoTracks() ?? []) track.enabled = !this.#cameraOff;
    this.#ui.setMicMuted(this.#micMuted);
    this.#ui.setCameraOff(this.#cameraOff);
    this.#features.localState({ micMuted: this.#micMuted, cameraOff: this.#cameraOff });
  }

  #fail(err) {
    console.error(err);
    const text = `Something went wrong: ${err?.message ?? err}`;
    if (this.#name) this.#ui.setCallStatus(text, 'error');
    else this.#ui.setLoginStatus(text, 'error');
  }
}

/** No sound, no notification: for tests under Node and pages without Web Audio. */
const SILENT = Object.freeze({ unlock() {}, incoming() {}, ringback() {}, stop() {}, state: null });
/** No peer-to-peer extras (unit tests, or a page without their containers). */
const NO_FEATURES = Object.freeze({
  callStarted() {},
  connection() {},
  callEnded() {},
  localState() {},
  localStream() {},
});

function byName(a, b) {
  return a.localeCompare(b);
}
