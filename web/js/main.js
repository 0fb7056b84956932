// Entry point: wires the modules together. Nothing here but construction.

import { App } from './app.js';
import { signInGate } from './auth.js';
import { openLocalMedia } from './media.js';
import { PeerFeatures } from './peer-features.js';
import { callFromHash, pageOptions, signalingUrl } from './protocol.js';
import { Ringing } from './ringing.js';
import { SessionStore } from './session-store.js';
import { Signaling } from './signaling.js';
import { createUi } from './ui.js';

const ui = createUi(document);
const signaling = new Signaling(signalingUrl(window.location));
const features = new PeerFeatures({
  doc: document,
  retryMedia: () => app.retryMedia(),
  log: console.debug.bind(console),
});
const app = new App({
  features,
  signaling,
  ui,
  openMedia: () => openLocalMedia(navigator.mediaDevices),
  options: { ...pageOptions(window.location.search), call: callFromHash(window.location.hash) },
  store: new SessionStore(storageOrNull()),
  ringing: new Ringing(window),
});

/** This tab's sessionStorage, or null where it is unavailable (it can throw on access). */
function storageOrNull() {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

// Debug and test hook: a read-only view of the call state (and the current
// RTCPeerConnection, for getStats in tests). Nothing reads it back.
Object.defineProperty(window, 'duet', {
  value: Object.freeze({
    get state() {
      return app.debugState;
    },
    get features() {
      return features.debugState;
    },
  }),
  writable: false,
  configurable: false,
});

// Closing or reloading the tab in a call asks first (the call would end, or rejoin).
window.addEventListener('beforeunload', (event) => {
  const call = app.debugState.call;
  if (call === 'connecting' || call === 'connected') {
    event.preventDefault();
    event.returnValue = '';
  }
});

// A link to call someone opened in a tab that is already signed in.
window.addEventListener('hashchange', () => {
  const name = callFromHash(window.location.hash);
  if (name) app.callFromLink(name);
});

// The WebSocket opens only once the server lets this page in (password, if it asks).
signInGate(document).then(() => app.start());

// Installable, and opens offline (sw.js). Refused on a page with an untrusted certificate
// or a plain http:// LAN address; the client works the same without it.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker
    .register('sw.js')
    .then(() => navigator.serviceWorker.ready)
    .then((reg) => {
      const loaded = performance.getEntriesByType('resource').map((e) => e.name);
      reg.active?.postMessage({ cache: [window.location.pathname, ...loaded] });
    })
    .catch((err) => console.debug('no service worker:', err?.message ?? err));
}
