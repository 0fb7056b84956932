// Entry point: wires the modules together. Nothing here but construction.

import { App } from './app.js';
import { signInGate } from './auth.js';
import { openLocalMedia } from './media.js';
import { PeerFeatures } from './peer-features.js';
import { pageOptions, signalingUrl } from './protocol.js';
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
  options: pageOptions(window.location.search),
  store: new SessionStore(storageOrNull()),
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

// The WebSocket opens only once the server lets this page in (password, if it asks).
signInGate(document).then(() => app.start());
