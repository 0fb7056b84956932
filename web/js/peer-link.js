// The call's own data channels, peer to peer over the call's DTLS/SCTP association
// (nothing goes through the server). Two channels, both `negotiated: true` with fixed
// ids, so each side creates them on its own and neither waits for a `datachannel`
// event; standard API, the same in Chromium and Firefox:
//   id 0 'duet-control'  small JSON messages: the sender's state (mute, camera), chat
//   id 1 'duet-file'     file transfers (file-transfer.js): JSON headers and binary chunks
//                        on one ordered stream, so a header never overtakes its chunks
// They are created with each RTCPeerConnection, before its first offer, so the offer
// carries the m=application section. An ICE restart keeps the connection and so the
// channels; a re-join (a reloaded page) makes a new connection and so new channels.
// A peer whose client has no channels answers without m=application: the channels just
// never open, and the call works as before.
//
// Events: 'open', 'close', 'message' (detail: a validated control message object).

export const CONTROL_CHANNEL = Object.freeze({ label: 'duet-control', id: 0 });
export const FILE_CHANNEL = Object.freeze({ label: 'duet-file', id: 1 });
/** A control message larger than this is not one of ours: dropped. */
export const MAX_CONTROL_BYTES = 16 * 1024;
/** Longest chat message, in UTF-16 units (the input enforces it too). */
export const MAX_CHAT_CHARS = 4000;

/**
 * A control message from the peer, checked: the object, or null when it is not one
 * we know (wrong shape, unknown type). Unknown fields are ignored, so a newer client's
 * additions do not break an older one.
 */
export function parseControl(raw) {
  if (typeof raw !== 'string' || raw.length > MAX_CONTROL_BYTES) return null;
  let m;
  try {
    m = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!m || typeof m !== 'object' || Array.isArray(m)) return null;
  switch (m.type) {
    case 'state': {
      const flags = ['micMuted', 'cameraOff', 'audio', 'video', 'screen'];
      const state = { type: 'state' };
      for (const f of flags) state[f] = m[f] === true;
      return state;
    }
    case 'chat':
      if (typeof m.text !== 'string' || m.text.length === 0 || m.text.length > MAX_CHAT_CHARS) return null;
      return { type: 'chat', text: m.text };
    default:
      return null;
  }
}

export class PeerLink extends EventTarget {
  /** @type {RTCDataChannel} */
  control;
  /** @type {RTCDataChannel} */
  file;
  #closed = false;

  /** @param {RTCPeerConnection} pc a new connection, before its first offer or answer */
  constructor(pc, log = () => {}) {
    super();
    this.control = pc.createDataChannel(CONTROL_CHANNEL.label, { negotiated: true, id: CONTROL_CHANNEL.id });
    this.file = pc.createDataChannel(FILE_CHANNEL.label, { negotiated: true, id: FILE_CHANNEL.id });
    this.file.binaryType = 'arraybuffer';
    this.control.addEventListener('open', () => {
      if (!this.#closed) this.dispatchEvent(new Event('open'));
    });
    this.control.addEventListener('close', () => {
      if (!this.#closed) this.dispatchEvent(new Event('close'));
    });
    this.control.addEventListener('message', (event) => {
      if (this.#closed) return;
      const m = parseControl(event.data);
      if (m) this.dispatchEvent(new CustomEvent('message', { detail: m }));
      else log('ignored a control message from the peer', String(event.data).slice(0, 80));
    });
  }

  get open() {
    return !this.#closed && this.control.readyState === 'open';
  }

  /** Send a control message; false when the channel is not open (the caller says so). */
  send(message) {
    if (!this.open) return false;
    try {
      this.control.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  /** Stop listening (the connection is being replaced or the call ended). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const channel of [this.control, this.file]) {
      try {
        channel.close();
      } catch {
        // already closed with its connection
      }
    }
  }
}
