// Keyboard shortcuts of the call view, as a table: which action a key press is, given
// where the call stands. Pure (no DOM), so the rules run under Node too.
//
//   m       mute / unmute (in a call or while it rings out)
//   v       camera off / on
//   Enter   accept a ringing call (unless focus is on another button)
//   Escape  decline a ringing call, cancel our own, or ask before hanging up

import { CallState } from './call-state.js';

/**
 * @param {{key: string, ctrlKey?: boolean, metaKey?: boolean, altKey?: boolean}} key the event
 * @param {string} state a CallState
 * @param {{typing?: boolean, onButton?: boolean}} focus typing: focus is in a text field;
 *   onButton: focus is on a button (Enter belongs to it)
 * @returns {'toggleMic' | 'toggleCamera' | 'accept' | 'decline' | 'cancel' | 'confirmHangUp' | null}
 */
export function shortcutFor(key, state, { typing = false, onButton = false } = {}) {
  if (key.ctrlKey || key.metaKey || key.altKey) return null;
  if (state === CallState.IDLE) return null;
  switch (key.key) {
    case 'Escape':
      if (state === CallState.INCOMING) return 'decline';
      if (state === CallState.OUTGOING) return 'cancel';
      return 'confirmHangUp';
    case 'Enter':
      return state === CallState.INCOMING && !onButton && !typing ? 'accept' : null;
    case 'm':
    case 'M':
      return typing || state === CallState.INCOMING ? null : 'toggleMic';
    case 'v':
    case 'V':
      return typing || state === CallState.INCOMING ? null : 'toggleCamera';
    default:
      return null;
  }
}
