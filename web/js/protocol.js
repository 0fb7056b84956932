// The duet wire protocol as the browser sees it (docs/protocol.md): where the
// signaling socket lives, the messages this client sends, and the human text for
// the codes and reasons the server sends back. Pure functions, no DOM, no I/O,
// so they can be unit-tested under Node.

/** WebSocket URL for the page's own server: same host and port, path /ws. */
export function signalingUrl(location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // An application's token on the page URL (?token=JWT) goes on to the WebSocket, where
  // it signs the user in (docs/auth.md).
  const token = new URLSearchParams(location.search ?? '').get('token');
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  return `${scheme}//${location.host}/ws${query}`;
}

/**
 * The name a shared link asks to call: `#call=NAME` (where `/call/NAME` redirects), or null.
 * @param {string} hash location.hash
 */
export function callFromHash(hash) {
  const params = new URLSearchParams(String(hash ?? '').replace(/^#/, ''));
  const name = params.get('call');
  return name && name.trim() ? name.trim() : null;
}

/** The link that calls `name` from any browser: `/call/NAME` on this server. */
export function callLink(location, name) {
  return `${location.origin}/call/${encodeURIComponent(name)}`;
}

/** Options read from the page URL. `?relay=1` forces TURN (for TURN tests). */
export function pageOptions(search) {
  const params = new URLSearchParams(search);
  const relay = params.get('relay');
  return { relayOnly: relay === '1' || relay === 'true' };
}

/** Names are trimmed by the server; mirror its rules so we can say why early. */
export function checkName(raw) {
  const name = String(raw ?? '').trim();
  if (name.length === 0) return { ok: false, name, message: 'Please type a name.' };
  if ([...name].length > 64) return { ok: false, name, message: 'Names are at most 64 characters.' };
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) {
    return { ok: false, name, message: 'Names cannot contain control characters.' };
  }
  return { ok: true, name };
}

// Messages we send. Kept here so every field name is written once.
export const msg = {
  /**
   * Always resumable (docs/protocol.md, Resume). `resumeToken` takes back a held
   * session; `call` names the peer we believe we are in a call with, so the
   * server can restore that call after a restart. `presenceBatch`: we read
   * `presence-batch` (see presenceChanges).
   */
  login: (name, { resumeToken = null, call = null } = {}) => {
    const m = { type: 'login', name, resume: true, presenceBatch: true };
    if (resumeToken) m.resumeToken = resumeToken;
    if (call) m.call = call;
    return m;
  },
  offer: (name, offer) => ({ type: 'offer', name, offer }),
  answer: (name, answer) => ({ type: 'answer', name, answer }),
  candidate: (name, candidate) => ({ type: 'candidate', name, candidate }),
  leave: (name, reason = 'hangup') => ({ type: 'leave', name, reason }),
};

/**
 * The [name, online] changes a `presence` or `presence-batch` message carries
 * (docs/protocol.md, Presence); none for anything malformed.
 */
export function presenceChanges(m) {
  if (m?.type === 'presence') {
    return typeof m.name === 'string' ? [[m.name, m.online === true]] : [];
  }
  if (m?.type !== 'presence-batch') return [];
  const names = (list) => (Array.isArray(list) ? list.filter((n) => typeof n === 'string') : []);
  return [...names(m.online).map((n) => [n, true]), ...names(m.offline).map((n) => [n, false])];
}

/** Turn a frame's text into a message object, or null if it is not one. */
export function parseMessage(text) {
  if (typeof text !== 'string') return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  if (typeof value.type !== 'string') return null;
  return value;
}

/**
 * What to say when a call ends because of a `leave` from the server.
 * `role` is 'caller' or 'callee' (who we were in this attempt), `phase` is
 * 'ringing' or 'connected'.
 */
export function describeLeave({ reason, peer, role, phase }) {
  const who = peer || 'The other side';
  switch (reason) {
    case 'declined':
      return `${who} declined the call.`;
    case 'cancelled':
      return `${who} cancelled the call.`;
    case 'no-answer':
      return role === 'caller'
        ? `No answer from ${who}.`
        : `Missed call from ${who} (no answer in time).`;
    case 'no-path':
      return `No network path to ${who}; the call has ended.`;
    case 'disconnected':
      return phase === 'connected'
        ? `${who} disconnected; the call has ended.`
        : `${who} disconnected.`;
    case 'hangup':
    default:
      if (phase === 'ringing') {
        return role === 'caller' ? `${who} did not take the call.` : `${who} cancelled the call.`;
      }
      return `${who} hung up.`;
  }
}

/** What to say for an `error` message; `name` is the target concerned, if any. */
export function describeError({ code, message, name }) {
  const who = typeof name === 'string' && name ? name : 'That user';
  switch (code) {
    case 'not-online':
      return `${who} is not online.`;
    case 'busy':
      return `${who} is busy in another call.`;
    case 'cannot-call-self':
      return 'You cannot call yourself.';
    case 'already-in-call':
      return 'You are already in a call; hang up first.';
    case 'rate-limited':
      return 'Too many messages; slow down a moment.';
    case 'unavailable':
      return 'The server cannot do that right now; try again shortly.';
    case 'delivery-failed':
      return `Could not reach ${who}; their connection is too slow, or they are reconnecting.`;
    default:
      return typeof message === 'string' && message ? message : `Server error (${code || 'unknown'}).`;
  }
}

/** What to say when login is refused. */
export function describeLoginFailure({ code, message }) {
  switch (code) {
    case 'name-taken':
      return typeof message === 'string' && message ? message : 'That name is already in use; choose another.';
    case 'invalid-name':
      return typeof message === 'string' && message ? message : 'That name is not allowed; choose another.';
    case 'unavailable':
      return 'The server cannot sign you in right now; try again shortly.';
    case 'invalid-token':
      return 'Your earlier session could not be taken back (it is in use elsewhere or has expired).';
    default:
      return typeof message === 'string' && message ? message : 'Sign-in was refused; try a different name.';
  }
}

/** Errors that end an outgoing call attempt when they answer our `offer`. */
export function endsCallAttempt(error) {
  if (error.request === 'offer') return true;
  const fatal = ['not-online', 'busy', 'cannot-call-self', 'already-in-call'];
  return error.request === undefined && fatal.includes(error.code);
}
