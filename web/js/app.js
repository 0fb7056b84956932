// The call controller: the one place that knows the call state. It reacts to
// server messages (from Signaling), to clicks (from the UI's handlers) and to
// the peer connection (PeerCall events), and tells the UI what to show.
//
// States: idle -> outgoing (we ring) -> connecting -> connected -> idle
//         idle -> incoming (we are rung) -> connecting -> connected -> idle

import {
  checkName,
  describeError,
  describeLeave,
  describeLoginFailure,
  endsCallAttempt,
  msg,
} from './protocol.js';
import { PeerCall } from './call.js';
import { View } from './ui.js';
import { formatDuration, formatStats, summarizeStats } from './stats.js';
import { backoffDelay } from './signaling.js';

const ICE_FAILED_TEXT = 'Could not connect directly; a TURN server may be needed.';
const STATS_INTERVAL_MS = 1000;
const TIMER_INTERVAL_MS = 500;
/** Answered but no media path after this long: most likely a TURN server is needed. */
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
   * The current call attempt, or null when idle.
   * @type {null | {
   *   state: string, peer: string, role: 'caller' | 'callee', peerCall: PeerCall,
   *   offer?: object, outbox: object[], canSend: boolean,
   *   connectedAt?: number, timer?: any, statsTimer?: any, connectTimer?: any, lastStats?: object | null,
   *   iceFailed?: boolean,
   * }}
   */
  #call = null;

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
    const c = this.#call;
    return Object.freeze({
      name: this.#name,
      signaling: this.#signaling.isOpen ? 'open' : 'down',
      call: c ? c.state : 'idle',
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

  async startCall(raw) {
    if (this.#call || !this.#name) return;
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
    const call = this.#newCall(peer, 'caller', View.OUTGOING);
    this.#ui.setCallStatus(`Calling ${peer}…`, 'info');
    try {
      await this.#media;
      const offer = await call.peerCall.makeOffer(this.#localStream);
      if (this.#call !== call) return; // cancelled while we were preparing
      this.#signaling.send(msg.offer(peer, offer));
      this.#flushOutbox(call);
    } catch (err) {
      if (this.#call === call) this.#endCall(`Could not start the call: ${err?.message ?? err}`, 'error');
    }
  }

  async accept() {
    const call = this.#call;
    if (!call || call.state !== View.INCOMING) return;
    this.#setState(call, View.CONNECTING);
    this.#ui.setCallStatus(`Connecting to ${call.peer}…`, 'info');
    try {
      await this.#media;
      const answer = await call.peerCall.acceptOffer(call.offer, this.#localStream);
      if (this.#call !== call) return;
      this.#signaling.send(msg.answer(call.peer, answer));
      this.#flushOutbox(call);
    } catch (err) {
      if (this.#call !== call) return;
      this.#signaling.send(msg.leave(call.peer, 'hangup'));
      this.#endCall(`Could not answer the call: ${err?.message ?? err}`, 'error');
    }
  }

  decline() {
    const call = this.#call;
    if (!call || call.state !== View.INCOMING) return;
    this.#signaling.send(msg.leave(call.peer, 'declined'));
    this.#endCall(`You declined the call from ${call.peer}.`, 'info');
  }

  hangUp() {
    const call = this.#call;
    if (!call) return;
    if (call.state === View.INCOMING) {
      this.decline();
    } else if (call.state === View.OUTGOING) {
      this.#signaling.send(msg.leave(call.peer, 'cancelled'));
      this.#endCall(`You cancelled the call to ${call.peer}.`, 'info');
    } else {
      this.#signaling.send(msg.leave(call.peer, 'hangup'));
      this.#endCall(`Call with ${call.peer} ended.`, 'info');
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
    if (this.#call) {
      // The server frees our name and tells the peer; the call cannot go on.
      this.#endCall(`${text} The call with ${this.#call.peer} has ended.`, 'error');
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
        if (this.#call && this.#call.peer === m.name && this.#call.state === View.OUTGOING) {
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
      this.#ui.setView(View.IDLE);
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
    const call = this.#call;
    if (!call) {
      const incoming = this.#newCall(from, 'callee', View.INCOMING);
      incoming.offer = m.offer;
      this.#ui.setCallStatus(`${from} is calling`, 'info');
      return;
    }
    if (call.peer !== from) {
      // The server only pairs free users, so this is a stale message; ignore it.
      this.#log('ignored an offer from', from, 'while in a call with', call.peer);
      return;
    }
    if (call.state === View.OUTGOING) {
      // Both called each other at once. The server paired us; the side with the
      // larger name gives way and answers the other's offer.
      if (this.#name > from) {
        call.peerCall.close();
        const answering = this.#newCall(from, 'callee', View.INCOMING);
        answering.offer = m.offer;
        await this.accept();
      }
      return;
    }
    if (call.state === View.CONNECTING || call.state === View.CONNECTED) {
      // Renegotiation within the call.
      const answer = await call.peerCall.acceptOffer(m.offer);
      if (this.#call === call) this.#signaling.send(msg.answer(from, answer));
    }
  }

  async #onAnswer(m) {
    const call = this.#call;
    if (!call || call.role !== 'caller' || !m.answer) return;
    if (typeof m.name === 'string' && m.name !== call.peer) return;
    if (call.state === View.OUTGOING) {
      this.#setState(call, View.CONNECTING);
      if (call.iceFailed) this.#ui.setCallStatus(ICE_FAILED_TEXT, 'error');
      else this.#ui.setCallStatus(`${call.peer} answered; connecting…`, 'info');
    }
    try {
      await call.peerCall.applyAnswer(m.answer);
    } catch (err) {
      if (this.#call !== call) return;
      this.#signaling.send(msg.leave(call.peer, 'hangup'));
      this.#endCall(`The answer from ${call.peer} could not be used: ${err?.message ?? err}`, 'error');
    }
  }

  async #onCandidate(m) {
    const call = this.#call;
    if (!call || !m.candidate) return;
    if (typeof m.name === 'string' && m.name !== call.peer) return;
    await call.peerCall.addRemoteCandidate(m.candidate);
  }

  #onLeave(m) {
    const call = this.#call;
    if (!call) return;
    if (typeof m.name === 'string' && m.name !== call.peer) return;
    // A callee who pressed Accept is in the call, even before media flows.
    const phase = call.state === View.CONNECTED || call.state === View.CONNECTING ? 'connected' : 'ringing';
    const text = describeLeave({ reason: m.reason, peer: call.peer, role: call.role, phase });
    const kind = m.reason === 'hangup' || m.reason === undefined ? 'info' : 'error';
    this.#endCall(text, kind);
  }

  #onError(m) {
    const call = this.#call;
    const text = describeError(m);
    if (call && endsCallAttempt(m) && (typeof m.name !== 'string' || m.name === call.peer)) {
      if (call.state === View.OUTGOING) {
        this.#endCall(text, 'error');
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

  #newCall(peer, role, state) {
    const call = { state, peer, role, peerCall: null, outbox: [], canSend: false, lastStats: null };
    call.peerCall = new PeerCall({
      iceServers: this.#iceServers,
      relayOnly: !!this.#options.relayOnly,
      log: this.#log,
      sendCandidate: (candidate) => {
        if (this.#call !== call) return;
        // Hold our candidates until our offer/answer is out, so the server has
        // paired us before the first candidate arrives.
        if (call.canSend) this.#signaling.send(msg.candidate(call.peer, candidate));
        else call.outbox.push(candidate);
      },
    });
    const pc = call.peerCall;
    pc.addEventListener('remotestream', (e) => {
      if (this.#call === call) this.#ui.setRemoteStream(e.detail);
    });
    pc.addEventListener('connected', () => this.#onMediaConnected(call));
    pc.addEventListener('icefailed', () => {
      if (this.#call !== call) return;
      call.iceFailed = true;
      // While still ringing, keep "Calling …" up; say it once answered.
      if (call.state !== View.OUTGOING) this.#ui.setCallStatus(ICE_FAILED_TEXT, 'error');
    });
    pc.addEventListener('statechange', (e) => {
      if (this.#call !== call || call.state !== View.CONNECTED) return;
      if (e.detail.connectionState === 'disconnected') {
        this.#ui.setCallStatus(`Connection to ${call.peer} interrupted; trying to recover…`, 'error');
      }
    });
    this.#call = call;
    this.#ui.setView(state, peer);
    return call;
  }

  #flushOutbox(call) {
    call.canSend = true;
    for (const candidate of call.outbox.splice(0)) {
      this.#signaling.send(msg.candidate(call.peer, candidate));
    }
  }

  #setState(call, state) {
    call.state = state;
    if (state === View.CONNECTING && !call.connectTimer) {
      call.connectTimer = setTimeout(() => {
        if (this.#call === call && call.state === View.CONNECTING) this.#ui.setCallStatus(ICE_FAILED_TEXT, 'error');
      }, CONNECT_TIMEOUT_MS);
    }
    this.#ui.setView(state, call.peer);
  }

  #onMediaConnected(call) {
    if (this.#call !== call) return;
    if (call.state !== View.CONNECTED) {
      this.#setState(call, View.CONNECTED);
      call.connectedAt = performance.now();
      call.timer = setInterval(() => this.#ui.setTimer(formatDuration(performance.now() - call.connectedAt)), TIMER_INTERVAL_MS);
      call.statsTimer = setInterval(() => this.#sampleStats(call), STATS_INTERVAL_MS);
      this.#ui.setTimer(formatDuration(0));
      this.#ui.setStats('waiting for video…');
    }
    this.#ui.setCallStatus(`In a call with ${call.peer}.`, 'ok');
  }

  async #sampleStats(call) {
    if (this.#call !== call) return;
    try {
      const report = await call.peerCall.pc.getStats();
      if (this.#call !== call) return;
      call.lastStats = summarizeStats(report.values(), call.lastStats);
      this.#ui.setStats(formatStats(call.lastStats));
    } catch (err) {
      this.#log('getStats failed', err);
    }
  }

  #endCall(text, kind) {
    const call = this.#call;
    if (!call) return;
    this.#call = null;
    clearInterval(call.timer);
    clearInterval(call.statsTimer);
    clearTimeout(call.connectTimer);
    call.peerCall.close();
    this.#ui.setRemoteStream(null);
    this.#ui.setTimer(null);
    this.#ui.setStats(null);
    this.#ui.setView(View.IDLE);
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
    if (problem && !this.#call) this.#ui.setCallStatus(problem, 'error');
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
