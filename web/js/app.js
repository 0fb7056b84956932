// The call controller: the one place that knows the call state (CallState, in
// call-state.js). It reacts to server messages (from Signaling), to clicks (from
// the UI's handlers) and to the peer connection (PeerCall events), and tells the
// UI what to show. Each call attempt is a CallAttempt that owns its timers and
// its peer connection; what an attempt started stops when it closes.

import {
  checkName,
  describeError,
  describeLeave,
  describeLoginFailure,
  endsCallAttempt,
  msg,
} from './protocol.js';
import { CallAttempt } from './attempt.js';
import { PeerCall } from './call.js';
import { IceErrors, explainFailure } from './ice-diagnosis.js';
import { CallState, isAnswered } from './call-state.js';
import { formatDuration, formatStats, summarizeStats } from './stats.js';
import { backoffDelay } from './signaling.js';

const STATS_INTERVAL_MS = 1000;
const TIMER_INTERVAL_MS = 500;
/** Answered but no media path after this long: the attempt ends, saying why (ice-diagnosis.js). */
const CONNECT_TIMEOUT_MS = 20_000;
/** Re-login after a reconnect may find our old session not yet gone. */
const RELOGIN_ATTEMPTS = 6;

export class App {
  #signaling;
  #ui;
  #openMedia;
  #options;
  #log;

  /** Our name once logged in (kept across reconnects). */
  #name = null;
  /** Name sent in a login not yet answered. */
  #pendingLogin = null;
  #reloginAttempt = 0;
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

  constructor({ signaling, ui, openMedia, options = {}, log = console.debug.bind(console) }) {
    this.#signaling = signaling;
    this.#ui = ui;
    this.#openMedia = openMedia;
    this.#options = options;
    this.#log = log;

    ui.on({
      login: (raw) => this.login(raw),
      call: (raw) => this.startCall(raw),
      accept: () => this.accept(),
      decline: () => this.decline(),
      hangup: () => this.hangUp(),
      toggleMic: () => this.toggleMic(),
      toggleCamera: () => this.toggleCamera(),
    });
    signaling.addEventListener('open', (e) => this.#onSignalingOpen(e.detail));
    signaling.addEventListener('down', (e) => this.#onSignalingDown(e.detail));
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
    });
  }

  start() {
    this.#ui.showLogin();
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
      this.#ui.setLoginStatus('Not connected to the server yet; retrying, try again in a moment.', 'error');
      return;
    }
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
    this.#ui.setConnection('Connected', 'ok');
    if (this.#name) {
      this.#reloginAttempt = 0;
      this.#relogin();
    } else if (reconnect) {
      this.#ui.setLoginStatus('Reconnected to the server.', 'ok');
    }
  }

  #relogin() {
    this.#reloginTimer = null;
    if (!this.#signaling.isOpen) return;
    this.#pendingLogin = this.#name;
    this.#ui.setCallStatus(`Reconnected; signing in again as ${this.#name}…`, 'info');
    this.#signaling.send(msg.login(this.#name));
  }

  #onSignalingDown({ retryInMs, everOpened }) {
    this.#ui.setSignalingUp(false);
    clearTimeout(this.#reloginTimer);
    this.#pendingLogin = null;
    const seconds = Math.max(1, Math.round(retryInMs / 1000));
    const text = everOpened
      ? `Lost the connection to the server; reconnecting in ${seconds} s…`
      : `Cannot reach the server; retrying in ${seconds} s…`;
    this.#ui.setConnection(everOpened ? 'Reconnecting…' : 'Offline', 'error');
    const attempt = this.#attempt;
    if (attempt) {
      // The server frees our name and tells the peer; the call cannot go on.
      this.#endCall(attempt, `${text} The call with ${attempt.peer} has ended.`, 'error');
    } else if (this.#name) {
      this.#ui.setCallStatus(text, 'error');
    } else {
      this.#ui.setLoginStatus(text, 'error');
      this.#ui.setLoginBusy(false);
    }
  }

  async #onMessage(m) {
    switch (m.type) {
      case 'login':
        return this.#onLogin(m);
      case 'presence':
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
        }
        return;
      case 'leave':
        return this.#onLeave(m);
      case 'error':
        return this.#onError(m);
      default:
        this.#log('ignored message of unknown type', m.type);
    }
  }

  #onLogin(m) {
    const relogin = this.#name !== null;
    const attempted = this.#pendingLogin;
    this.#pendingLogin = null;
    if (m.success === true) {
      this.#name = typeof m.name === 'string' ? m.name : attempted;
      this.#iceServers = Array.isArray(m.iceServers) ? m.iceServers : [];
      this.#setUsers(Array.isArray(m.users) ? m.users : [], !!m.usersTruncated);
      if (relogin) {
        this.#ui.setCallStatus(`Reconnected; signed in again as ${this.#name}.`, 'ok');
        return;
      }
      this.#ui.setLoginBusy(false);
      this.#ui.setLoginStatus('', 'info');
      this.#ui.showCallPage(this.#name);
      this.#ui.setCallState(CallState.IDLE);
      this.#ui.setCallStatus('Ready. Pick someone online or type a name to call.', 'ok');
      this.#media = this.#startMedia();
      return;
    }
    const text = describeLoginFailure(m);
    if (relogin) {
      // Our old session may linger on the server for a moment after a drop.
      if (m.code === 'name-taken' && this.#reloginAttempt < RELOGIN_ATTEMPTS) {
        const delay = backoffDelay(this.#reloginAttempt++);
        this.#ui.setCallStatus(`${text} Retrying in ${Math.ceil(delay / 1000)} s…`, 'error');
        this.#reloginTimer = setTimeout(() => this.#relogin(), delay);
        return;
      }
      this.#name = null;
      this.#setUsers([], false);
      this.#ui.showLogin();
      this.#ui.setLoginBusy(false);
      this.#ui.setLoginStatus(`Could not sign in again after reconnecting: ${text}`, 'error');
      return;
    }
    this.#ui.setLoginBusy(false);
    this.#ui.setLoginStatus(text, 'error');
  }

  #onPresence(m) {
    if (typeof m.name !== 'string' || m.name === this.#name) return;
    if (m.online) this.#users.add(m.name);
    else this.#users.delete(m.name);
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
    if (isAnswered(attempt.state)) {
      // Renegotiation within the call.
      const answer = await attempt.step(attempt.peerCall.acceptOffer(m.offer));
      this.#signaling.send(msg.answer(from, answer));
    }
  }

  async #onAnswer(m) {
    const attempt = this.#attempt;
    if (attempt?.role !== 'caller' || !m.answer) return;
    if (typeof m.name === 'string' && m.name !== attempt.peer) return;
    if (attempt.state === CallState.OUTGOING) {
      this.#setState(attempt, CallState.CONNECTING);
      if (attempt.iceFailed) this.#noPath(attempt);
      else this.#ui.setCallStatus(`${attempt.peer} answered; connecting…`, 'info');
    }
    try {
      await attempt.step(attempt.peerCall.applyAnswer(m.answer));
    } catch (err) {
      this.#endCall(attempt, `The answer from ${attempt.peer} could not be used: ${err?.message ?? err}`, 'error', 'hangup');
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
    const pc = attempt.peerCall;
    attempt.iceErrors = new IceErrors(pc.pc);
    pc.addEventListener('remotestream', attempt.whileOpen((e) => this.#ui.setRemoteStream(e.detail)));
    pc.addEventListener('connected', attempt.whileOpen(() => this.#onMediaConnected(attempt)));
    pc.addEventListener(
      'icefailed',
      attempt.whileOpen(() => {
        attempt.iceFailed = true;
        // While still ringing, keep "Calling …" up; say it once answered.
        if (attempt.state !== CallState.OUTGOING) this.#noPath(attempt);
      }),
    );
    pc.addEventListener(
      'statechange',
      attempt.whileOpen((e) => {
        if (attempt.state === CallState.CONNECTED && e.detail.connectionState === 'disconnected') {
          this.#ui.setCallStatus(`Connection to ${attempt.peer} interrupted; trying to recover…`, 'error');
        }
      }),
    );
    this.#attempt = attempt;
    this.#ui.setCallState(state, peer);
    return attempt;
  }

  /**
   * Our offer or answer (`make`, run once local media is settled), then the
   * candidates held back for it. Throws what `make` throws; does nothing more
   * once the attempt is over.
   */
  async #sendDescription(attempt, make, message) {
    await attempt.step(this.#media);
    const description = await attempt.step(make());
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
    if (state === CallState.CONNECTING) {
      attempt.after(CONNECT_TIMEOUT_MS, () => {
        if (attempt.state === CallState.CONNECTING) this.#noPath(attempt);
      });
    }
    this.#ui.setCallState(state, attempt.peer);
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
    if (attempt.state !== CallState.CONNECTED) {
      this.#setState(attempt, CallState.CONNECTED);
      const connectedAt = performance.now();
      attempt.every(TIMER_INTERVAL_MS, () => this.#ui.setTimer(formatDuration(performance.now() - connectedAt)));
      attempt.every(STATS_INTERVAL_MS, () => this.#sampleStats(attempt));
      this.#ui.setTimer(formatDuration(0));
      this.#ui.setStats('waiting for video…');
    }
    this.#ui.setCallStatus(`In a call with ${attempt.peer}.`, 'ok');
  }

  async #sampleStats(attempt) {
    try {
      const report = await attempt.step(attempt.peerCall.pc.getStats());
      attempt.lastStats = summarizeStats(report.values(), attempt.lastStats);
      this.#ui.setStats(formatStats(attempt.lastStats));
    } catch (err) {
      this.#log('getStats failed', err);
    }
  }

  /**
   * End `attempt` (the current one) and show `text`; nothing if it is already over.
   * @param {string | null} [leave] the reason to tell the peer; null when the
   *   peer or the server ended it
   */
  #endCall(attempt, text, kind, leave = null) {
    if (attempt.closed) return;
    if (leave) this.#signaling.send(msg.leave(attempt.peer, leave));
    attempt.close();
    this.#attempt = null;
    this.#ui.setRemoteStream(null);
    this.#ui.setTimer(null);
    this.#ui.setStats(null);
    this.#ui.setCallState(CallState.IDLE);
    this.#ui.setCallStatus(text, kind);
  }

  // ---- local media --------------------------------------------------------

  async #startMedia() {
    const { stream, problem } = await this.#openMedia();
    this.#localStream = stream;
    this.#ui.setLocalStream(stream);
    this.#ui.setMediaAvailable({
      audio: !!stream?.getAudioTracks().length,
      video: !!stream?.getVideoTracks().length,
    });
    this.#applyToggles();
    if (problem && !this.#attempt) this.#ui.setCallStatus(problem, 'error');
    else if (problem) this.#log(problem);
    return stream;
  }

  #applyToggles() {
    for (const track of this.#localStream?.getAudioTracks() ?? []) track.enabled = !this.#micMuted;
    for (const track of this.#localStream?.getVideoTracks() ?? []) track.enabled = !this.#cameraOff;
    this.#ui.setMicMuted(this.#micMuted);
    this.#ui.setCameraOff(this.#cameraOff);
  }

  #fail(err) {
    console.error(err);
    const text = `Something went wrong: ${err?.message ?? err}`;
    if (this.#name) this.#ui.setCallStatus(text, 'error');
    else this.#ui.setLoginStatus(text, 'error');
  }
}

function byName(a, b) {
  return a.localeCompare(b);
}
