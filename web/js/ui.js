// The page: finds the elements, shows state, and turns clicks into calls of
// the handlers it is given. It holds no call logic and talks to no server.
// Every name or server text goes in with textContent, never innerHTML.

import { CallState } from './call-state.js';

/**
 * How the page shows each of the controller's call states: the line over the
 * remote video, and which controls work (dialling also needs the server).
 */
const SHOWN = Object.freeze({
  [CallState.IDLE]: { label: () => 'No one on the line', dial: true, hangUp: null, incoming: false },
  [CallState.OUTGOING]: { label: (peer) => `Calling ${peer}…`, dial: false, hangUp: 'Cancel', incoming: false },
  [CallState.INCOMING]: { label: () => '', dial: false, hangUp: null, incoming: true },
  [CallState.CONNECTING]: { label: (peer) => `Connecting to ${peer}…`, dial: false, hangUp: 'Hang up', incoming: false },
  [CallState.CONNECTED]: { label: (peer) => peer ?? '', dial: false, hangUp: 'Hang up', incoming: false },
});

export function createUi(doc = document) {
  const $ = (id) => {
    const el = doc.getElementById(id);
    if (!el) throw new Error(`index.html lacks #${id}`);
    return el;
  };
  const el = {
    loginPage: $('loginPage'),
    loginForm: $('loginForm'),
    usernameInput: $('usernameInput'),
    loginBtn: $('loginBtn'),
    loginStatus: $('loginStatus'),
    whoami: $('whoami'),
    connection: $('connection'),
    callPage: $('callPage'),
    localVideo: $('localVideo'),
    remoteVideo: $('remoteVideo'),
    remotePlaceholder: $('remotePlaceholder'),
    remoteLabel: $('remoteLabel'),
    callTimer: $('callTimer'),
    stats: $('stats'),
    callStatus: $('callStatus'),
    incomingPanel: $('incomingPanel'),
    incomingText: $('incomingText'),
    acceptBtn: $('acceptBtn'),
    declineBtn: $('declineBtn'),
    dialForm: $('dialForm'),
    callToUsernameInput: $('callToUsernameInput'),
    callBtn: $('callBtn'),
    muteBtn: $('muteBtn'),
    cameraBtn: $('cameraBtn'),
    hangUpBtn: $('hangUpBtn'),
    userList: $('userList'),
    usersEmpty: $('usersEmpty'),
    usersTruncated: $('usersTruncated'),
  };

  let handlers = {};
  let signalingUp = false;
  let callState = CallState.IDLE;
  const call = (name, ...args) => handlers[name]?.(...args);

  el.loginForm.addEventListener('submit', (event) => {
    event.preventDefault();
    call('login', el.usernameInput.value);
  });
  el.dialForm.addEventListener('submit', (event) => {
    event.preventDefault();
    call('call', el.callToUsernameInput.value);
  });
  el.acceptBtn.addEventListener('click', () => call('accept'));
  el.declineBtn.addEventListener('click', () => call('decline'));
  el.hangUpBtn.addEventListener('click', () => call('hangup'));
  el.muteBtn.addEventListener('click', () => call('toggleMic'));
  el.cameraBtn.addEventListener('click', () => call('toggleCamera'));
  el.userList.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-name]');
    if (button && !button.disabled) {
      el.callToUsernameInput.value = button.dataset.name;
      call('call', button.dataset.name);
    }
  });

  function setStatus(target, text, kind = 'info') {
    target.textContent = text ?? '';
    target.dataset.kind = kind;
  }

  function refreshControls() {
    const shown = SHOWN[callState];
    el.callBtn.disabled = !shown.dial || !signalingUp;
    el.callToUsernameInput.disabled = !shown.dial;
    el.hangUpBtn.disabled = shown.hangUp === null;
    el.hangUpBtn.textContent = shown.hangUp ?? 'Hang up';
    el.incomingPanel.hidden = !shown.incoming;
    el.acceptBtn.disabled = !shown.incoming;
    el.declineBtn.disabled = !shown.incoming;
    el.callPage.dataset.state = callState;
    for (const button of el.userList.querySelectorAll('button[data-name]')) {
      button.disabled = !shown.dial || !signalingUp;
    }
  }

  return {
    el,

    /** @param {Record<string, Function>} h login, call, accept, decline, hangup, toggleMic, toggleCamera */
    on(h) {
      handlers = { ...handlers, ...h };
    },

    /** @param {string} [name] to fill in (signing in again after a session was lost) */
    showLogin(name) {
      el.callPage.hidden = true;
      el.loginPage.hidden = false;
      el.whoami.hidden = true;
      if (name) el.usernameInput.value = name;
      el.usernameInput.focus();
    },

    showCallPage(name) {
      el.loginPage.hidden = true;
      el.callPage.hidden = false;
      el.whoami.textContent = `Signed in as ${name}`;
      el.whoami.hidden = false;
    },

    setLoginBusy(busy) {
      el.loginBtn.disabled = busy;
      el.usernameInput.disabled = busy;
    },

    setLoginStatus(text, kind) {
      setStatus(el.loginStatus, text, kind);
    },

    setConnection(text, kind) {
      setStatus(el.connection, text, kind);
    },

    setSignalingUp(up) {
      signalingUp = up;
      refreshControls();
    },

    setCallStatus(text, kind) {
      setStatus(el.callStatus, text, kind);
    },

    /** @param {string} state a CallState  @param {string | null} peer who the call is with */
    setCallState(state, peer = null) {
      callState = state;
      const shown = SHOWN[state];
      if (shown.incoming) el.incomingText.textContent = `${peer} is calling`;
      el.remoteLabel.textContent = shown.label(peer);
      refreshControls();
      if (shown.incoming) el.acceptBtn.focus({ preventScroll: true });
    },

    /** Online users, without ourselves. */
    setUsers(names, { truncated = false } = {}) {
      const items = names.map((name) => {
        const li = doc.createElement('li');
        const button = doc.createElement('button');
        button.type = 'button';
        button.className = 'user';
        button.dataset.name = name;
        button.textContent = name;
        button.title = `Call ${name}`;
        li.append(button);
        return li;
      });
      el.userList.replaceChildren(...items);
      el.usersEmpty.hidden = names.length > 0;
      el.usersTruncated.hidden = !truncated;
      refreshControls();
    },

    setLocalStream(stream) {
      el.localVideo.srcObject = stream;
      el.localVideo.hidden = !stream;
    },

    setRemoteStream(stream) {
      el.remoteVideo.srcObject = stream;
      el.remotePlaceholder.hidden = !!stream;
      if (stream) {
        // Autoplay may be refused without a user gesture; say so instead of failing silently.
        el.remoteVideo.play().catch((err) => {
          if (err?.name === 'NotAllowedError') {
            setStatus(el.callStatus, 'Click the video to start playback.', 'info');
            el.remoteVideo.addEventListener('click', () => el.remoteVideo.play(), { once: true });
          }
        });
      }
    },

    /** Which toggles make sense: no mic -> no mute button. */
    setMediaAvailable({ audio, video }) {
      el.muteBtn.hidden = !audio;
      el.cameraBtn.hidden = !video;
    },

    setMicMuted(muted) {
      el.muteBtn.setAttribute('aria-pressed', String(muted));
      el.muteBtn.textContent = muted ? 'Unmute' : 'Mute';
    },

    setCameraOff(off) {
      el.cameraBtn.setAttribute('aria-pressed', String(off));
      el.cameraBtn.textContent = off ? 'Camera on' : 'Camera off';
      el.localVideo.classList.toggle('camera-off', off);
    },

    /** Timer text, or null to hide it. */
    setTimer(text) {
      el.callTimer.hidden = text === null;
      if (text !== null) el.callTimer.textContent = text;
    },

    /** Stats line, or null to hide it. */
    setStats(text) {
      el.stats.hidden = text === null;
      if (text !== null) el.stats.textContent = text;
    },
  };
}
