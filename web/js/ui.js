// The page: finds the elements, shows state, and turns clicks into calls of
// the handlers it is given. It holds no call logic and talks to no server.
// Every name or server text goes in with textContent, never innerHTML.

import { CallState } from './call-state.js';
import { callLink } from './protocol.js';
import { QUALITY_WORDS } from './stats.js';
import { makeDraggable } from './selfview.js';
import { shortcutFor } from './shortcuts.js';

/** In a call, the controls fade after this long without a pointer move or key. */
const CONTROLS_IDLE_MS = 3000;
const LAST_NAME_KEY = 'duet.lastName';

/**
 * How the page shows each of the controller's call states: the line over the
 * remote video, and which controls work (dialling also needs the server).
 */
const SHOWN = Object.freeze({
  [CallState.IDLE]: { label: () => 'No one on the line', dial: true, hangUp: null, incoming: false },
  // The status line says "Calling…"/"Ringing…"; the picture shows only who.
  [CallState.OUTGOING]: { label: (peer) => peer ?? '', dial: false, hangUp: 'Cancel', incoming: false },
  [CallState.INCOMING]: { label: () => '', dial: false, hangUp: null, incoming: true },
  [CallState.CONNECTING]: { label: (peer) => peer ?? '', dial: false, hangUp: 'Hang up', incoming: false },
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
    lobbyView: $('lobbyView'),
    callView: $('callView'),
    signOutBtn: $('signOutBtn'),
    copyLinkBtn: $('copyLinkBtn'),
    qualityBtn: $('qualityBtn'),
    fullscreenBtn: $('fullscreenBtn'),
    pipBtn: $('pipBtn'),
    remoteInitials: $('remoteInitials'),
    hangUpLabel: $('hangUpLabel'),
    hangUpConfirm: $('hangUpConfirm'),
    localVideo: $('localVideo'),
    remoteVideo: $('remoteVideo'),
    remotePlaceholder: $('remotePlaceholder'),
    remoteLabel: $('remoteLabel'),
    callTimer: $('callTimer'),
    stats: $('stats'),
    callStatus: $('callStatus'),
    mediaRetry: $('lobbyMediaRetryBtn'),
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
  /** Our name while signed in, for the "copy my link" button. */
  let myName = null;
  /** The detailed stats line is shown (the quality button toggles it). */
  let detailsShown = false;
  let statsText = null;
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
  el.signOutBtn.addEventListener('click', () => call('signOut'));
  el.qualityBtn.addEventListener('click', () => {
    detailsShown = !detailsShown;
    el.qualityBtn.setAttribute('aria-expanded', String(detailsShown));
    el.stats.hidden = statsText === null || !detailsShown;
  });
  // Full screen for the call view; picture in picture for the remote video, where offered.
  el.fullscreenBtn.hidden = !doc.fullscreenEnabled;
  el.fullscreenBtn.addEventListener('click', () => {
    if (doc.fullscreenElement) doc.exitFullscreen().catch(() => {});
    else el.callView.requestFullscreen().catch((err) => setStatus(el.callStatus, `Full screen refused: ${err.message}`, 'error'));
  });
  doc.addEventListener('fullscreenchange', () => el.fullscreenBtn.setAttribute('aria-pressed', String(!!doc.fullscreenElement)));
  el.pipBtn.hidden = !doc.pictureInPictureEnabled;
  el.pipBtn.addEventListener('click', () => {
    if (doc.pictureInPictureElement) doc.exitPictureInPicture().catch(() => {});
    else el.remoteVideo.requestPictureInPicture().catch((err) => setStatus(el.callStatus, `Picture in picture refused: ${err.message}`, 'error'));
  });
  el.remoteVideo.addEventListener('enterpictureinpicture', () => el.pipBtn.setAttribute('aria-pressed', 'true'));
  el.remoteVideo.addEventListener('leavepictureinpicture', () => el.pipBtn.setAttribute('aria-pressed', 'false'));
  el.copyLinkBtn.addEventListener('click', async () => {
    if (!myName) return;
    const link = callLink(doc.defaultView.location, myName);
    try {
      await doc.defaultView.navigator.clipboard.writeText(link);
      setStatus(el.callStatus, `Link copied: ${link}`, 'ok');
    } catch {
      // No clipboard (a plain http:// page on the LAN): show it to copy by hand.
      setStatus(el.callStatus, `Your link: ${link}`, 'info');
    }
  });
  el.hangUpConfirm.addEventListener('close', () => {
    if (el.hangUpConfirm.returnValue === 'hangup') call('hangup');
    else if (callState !== CallState.IDLE) el.hangUpBtn.focus({ preventScroll: true });
  });
  // The dial box filters the online list as one types (and still dials any name).
  el.callToUsernameInput.addEventListener('input', filterUsers);
  makeDraggable(el.localVideo, el.callView, doc.defaultView ?? window);

  doc.addEventListener('keydown', (event) => {
    if (el.callPage.hidden || event.defaultPrevented || el.hangUpConfirm.open) return;
    const target = event.target;
    const typing = !!target?.closest?.('input, textarea, select, [contenteditable="true"]');
    const onButton = !!target?.closest?.('button, a[href]');
    const action = shortcutFor(event, callState, { typing, onButton });
    if (!action) return;
    event.preventDefault();
    if (action === 'confirmHangUp') {
      el.hangUpConfirm.returnValue = '';
      el.hangUpConfirm.showModal();
    } else if (action === 'cancel') call('hangup');
    else call(action);
  });

  // Controls fade while nothing moves in an answered call; any move or key brings them back.
  let idleTimer = null;
  const wake = () => {
    delete el.callView.dataset.idle;
    clearTimeout(idleTimer);
    if (callState === CallState.CONNECTED) {
      idleTimer = setTimeout(() => {
        el.callView.dataset.idle = '';
      }, CONTROLS_IDLE_MS);
    }
  };
  for (const type of ['pointermove', 'pointerdown', 'keydown', 'focusin']) {
    el.callView.addEventListener(type, wake, { passive: true });
  }
  doc.addEventListener('keydown', (event) => {
    if (event.key !== 'Shift') el.callView.dataset.keyboard = '';
    wake();
  });
  doc.addEventListener('pointerdown', () => delete el.callView.dataset.keyboard, { passive: true });

  // The last name signed in with, offered at the next visit (localStorage: this device).
  function lastName() {
    try {
      return doc.defaultView.localStorage.getItem(LAST_NAME_KEY);
    } catch {
      return null;
    }
  }
  function rememberName(name) {
    try {
      doc.defaultView.localStorage.setItem(LAST_NAME_KEY, name);
    } catch {
      // storage refused (private mode): nothing to remember then
    }
  }

  function filterUsers() {
    const needle = el.callToUsernameInput.value.trim().toLowerCase();
    for (const li of el.userList.children) {
      const name = li.firstElementChild?.dataset.name ?? '';
      li.hidden = needle !== '' && !name.toLowerCase().includes(needle);
    }
  }

  el.userList.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-name]');
    if (button && !button.disabled) {
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
    el.hangUpBtn.hidden = shown.hangUp === null;
    el.hangUpLabel.textContent = shown.hangUp ?? 'Hang up';
    el.hangUpBtn.title = `${shown.hangUp ?? 'Hang up'} (Escape)`;
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

    /** @param {Record<string, Function>} h login, call, accept, decline, hangup, toggleMic, toggleCamera, signOut */
    on(h) {
      handlers = { ...handlers, ...h };
    },

    /** @param {string} [name] to fill in (signing in again after a session was lost) */
    showLogin(name) {
      el.callPage.hidden = true;
      el.loginPage.hidden = false;
      el.whoami.hidden = true;
      el.signOutBtn.hidden = true;
      myName = null;
      el.usernameInput.value = name ?? lastName() ?? el.usernameInput.value;
      el.usernameInput.focus();
    },

    showCallPage(name) {
      el.loginPage.hidden = true;
      el.callPage.hidden = false;
      myName = name;
      rememberName(name);
      el.whoami.textContent = `Signed in as ${name}`;
      el.whoami.title = name;
      el.whoami.hidden = false;
      el.signOutBtn.hidden = false;
      // Focus follows the view: from the sign-in form to the dial box.
      if (callState === CallState.IDLE) el.callToUsernameInput.focus({ preventScroll: true });
    },

    /** The page's `#call=NAME` was acted on: a reload must not call again. */
    linkUsed() {
      const win = doc.defaultView;
      if (win?.location.hash) win.history.replaceState(null, '', win.location.pathname + win.location.search);
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

    /** Offers (or stops offering) a retry of the camera and microphone in the lobby. */
    setMediaRetry(offered, onRetry) {
      el.mediaRetry.hidden = !offered;
      el.mediaRetry.onclick = offered ? onRetry : null;
    },

    /** @param {string} state a CallState  @param {string | null} peer who the call is with */
    setCallState(state, peer = null) {
      const before = callState;
      callState = state;
      const shown = SHOWN[state];
      if (shown.incoming) el.incomingText.textContent = `${peer} is calling`;
      el.remoteLabel.textContent = shown.label(peer);
      el.remoteInitials.textContent = peer ? initials(peer) : '';
      refreshControls();
      if (before === CallState.IDLE && state !== CallState.IDLE) {
        // The dial box is a filter too: a name dialled must not hide the list afterwards.
        el.callToUsernameInput.value = '';
        filterUsers();
      }
      if (state === CallState.IDLE && el.hangUpConfirm.open) el.hangUpConfirm.close();
      wake();
      // Focus follows the view: Accept when it rings, Hang up in a call, the dial box after.
      if (shown.incoming) el.acceptBtn.focus({ preventScroll: true });
      else if (state === CallState.IDLE && before !== CallState.IDLE && !el.callPage.hidden) {
        el.callToUsernameInput.focus({ preventScroll: true });
      } else if (before === CallState.IDLE || before === CallState.INCOMING) {
        if (state !== CallState.IDLE) el.hangUpBtn.focus({ preventScroll: true });
      }
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
      filterUsers();
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

    /** The label stays "Mute"; aria-pressed says whether it is on. */
    setMicMuted(muted) {
      el.muteBtn.setAttribute('aria-pressed', String(muted));
    },

    setCameraOff(off) {
      el.cameraBtn.setAttribute('aria-pressed', String(off));
      el.localVideo.classList.toggle('camera-off', off);
    },

    /** Timer text, or null to hide it. */
    setTimer(text) {
      el.callTimer.hidden = text === null;
      if (text !== null) el.callTimer.textContent = text;
    },

    /** Stats line, or null to hide it. */
    setStats(text) {
      statsText = text;
      el.stats.hidden = text === null || !detailsShown;
      if (text !== null) el.stats.textContent = text;
    },

    /** Quality bars: a level 0..4 (stats.js qualityLevel), or null to hide them. */
    setQuality(level) {
      el.qualityBtn.hidden = level === null;
      if (level === null) return;
      el.qualityBtn.dataset.level = String(level);
      el.qualityBtn.setAttribute('aria-label', `Connection quality: ${QUALITY_WORDS[level]}`);
    },
  };
}

/** "alice" -> "A", "Ada Lovelace" -> "AL": for the picture when there is no video. */
export function initials(name) {
  const words = name.trim().split(/[\s._-]+/u).filter(Boolean);
  const first = (w) => [...w][0] ?? '';
  return (words.length > 1 ? first(words[0]) + first(words[1]) : first(words[0] ?? '')).toUpperCase();
}
