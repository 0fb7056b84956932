// Why a call attempt found no media path, in words the user (and the operator they tell)
// can act on. Three different problems look the same from "Connecting…":
//   - no TURN server configured: a direct path failed and there is no relay to fall back on;
//   - the TURN server refused: it answered with an error (wrong or expired credentials,
//     quota, policy), reported by `icecandidateerror` with a STUN error code;
//   - no network path: TURN is configured but no relay candidate was gathered (the
//     server was unreachable: UDP blocked and no TCP/TLS relay answered, code 701), or a
//     relay was gathered and still nothing connected.
// The evidence is the attempt's `icecandidateerror` events and its local candidates
// (getStats); `diagnose` itself is a pure function.

/** What a STUN/TURN error code means for the user (RFC 8489 §14.8, RFC 8656 §18.13). */
const REFUSALS = {
  400: 'the server did not accept the request',
  401: 'wrong or expired TURN credentials',
  403: "the server's policy forbids it",
  420: 'the server does not support what the browser asked for',
  437: 'the relay allocation was lost',
  438: 'the server restarted (stale nonce)',
  441: 'wrong TURN credentials',
  442: 'the server does not relay this transport',
  486: 'too many relays in use for this user or address (quota)',
  508: 'the server has no relay ports left',
};

/** Whether `url` names a TURN server (turn: or turns:). */
export function isTurnUrl(url) {
  return typeof url === 'string' && /^turns?:/i.test(url);
}

/** Whether the login reply's `iceServers` include a TURN server. */
export function hasTurn(iceServers) {
  return (Array.isArray(iceServers) ? iceServers : []).some((s) =>
    (Array.isArray(s?.urls) ? s.urls : [s?.urls]).some(isTurnUrl),
  );
}

/**
 * The `icecandidateerror` events of one peer connection, kept for `diagnose`.
 * Listening starts at construction; the events come during gathering.
 */
export class IceErrors {
  /** @type {{url: string, code: number, text: string}[]} */
  errors = [];

  /** @param {EventTarget} pc an RTCPeerConnection */
  constructor(pc) {
    pc.addEventListener('icecandidateerror', (e) => {
      this.errors.push({ url: e.url ?? '', code: Number(e.errorCode) || 0, text: e.errorText ?? '' });
    });
  }
}

/** The types of the local candidates gathered so far ('host', 'srflx', 'relay', ...). */
export async function localCandidateTypes(pc) {
  const types = new Set();
  try {
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'local-candidate' && s.candidateType) types.add(s.candidateType);
    }
  } catch {
    // A closed connection has no stats: no evidence, which diagnose handles.
  }
  return types;
}

/**
 * What to tell the user when the call with `peer` could not connect.
 * @param {object} evidence
 * @param {string} evidence.peer
 * @param {boolean} evidence.turnConfigured the login reply listed a TURN server
 * @param {{url: string, code: number, text: string}[]} evidence.errors icecandidateerror events
 * @param {Set<string>} evidence.localTypes local candidate types gathered
 * @returns {{kind: 'turn-refused' | 'no-turn' | 'no-path', text: string}}
 */
export function diagnose({ peer, turnConfigured, errors, localTypes }) {
  // A STUN error code (300-699) from a TURN server is a refusal; 701 is "no answer".
  const refusal = errors.find((e) => isTurnUrl(e.url) && e.code >= 300 && e.code < 700);
  if (refusal) {
    const why = REFUSALS[refusal.code] ?? 'it answered with an error';
    // Chromium's errorText ends in a full stop ("Unauthorized.").
    const said = [refusal.code, refusal.text.replace(/[.\s]+$/, '')].filter(Boolean).join(' ');
    return {
      kind: 'turn-refused',
      text: `Could not connect to ${peer}: the TURN server refused to relay (${said}: ${why}). Tell the operator of this site.`,
    };
  }
  if (!turnConfigured) {
    return {
      kind: 'no-turn',
      text:
        `No network path to ${peer}: a direct connection failed, and this server has no TURN ` +
        'relay configured (networks that block UDP or use strict NATs need one).',
    };
  }
  if (!localTypes.has('relay')) {
    return {
      kind: 'no-path',
      text:
        `No network path to ${peer}: the TURN relay could not be reached (this network may ` +
        'block UDP, and no TCP or TLS relay answered).',
    };
  }
  return {
    kind: 'no-path',
    text: `No network path to ${peer}: the relay was reached, but ${peer} could not be reached through it.`,
  };
}

/** Gathers the evidence of `pc` and diagnoses it (see `diagnose`). */
export async function explainFailure({ pc, peer, iceServers, iceErrors }) {
  return diagnose({
    peer,
    turnConfigured: hasTurn(iceServers),
    errors: iceErrors?.errors ?? [],
    localTypes: await localCandidateTypes(pc),
  });
}
