// Where the call stands, as the controller sees it. A leaf module: the
// controller (app.js) moves between these states and the page (ui.js) renders
// them, and neither imports the other.
//
//   idle -> outgoing (we ring the peer) -> connecting (they answered) -> connected -> idle
//   idle -> incoming (the peer rings us) -> connecting (we accepted) -> connected -> idle
//
// Any state can end in idle (hang up, leave, error, server lost). An attempt
// only moves forward: glare does not turn an outgoing attempt into an incoming
// one, it closes it and starts a new one. The strings are what the debug hook
// (window.duet.state.call) and the call page's data-state show.

export const CallState = Object.freeze({
  /** No attempt: ready to call. */
  IDLE: 'idle',
  /** We sent (or are making) an offer and wait for the answer. */
  OUTGOING: 'outgoing',
  /** The peer's offer is here; we have not accepted yet. */
  INCOMING: 'incoming',
  /** Answered, media not flowing yet. */
  CONNECTING: 'connecting',
  /** Media flows (it may still blip and recover). */
  CONNECTED: 'connected',
});

/** Answered by either side: in the call, even before media flows. */
export function isAnswered(state) {
  return state === CallState.CONNECTING || state === CallState.CONNECTED;
}
