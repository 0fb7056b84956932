// The local camera and microphone. Asks for both, then for whichever one is
// available, and reports plainly when there is neither: the user can still
// join calls and receive video (the call uses receive-only transceivers).

const ATTEMPTS = [
  { audio: true, video: true },
  { audio: false, video: true },
  { audio: true, video: false },
];

/**
 * @returns {Promise<{stream: MediaStream | null, problem: string | null}>}
 *   `problem` says in words what is missing, or null when both work.
 */
export async function openLocalMedia(mediaDevices = globalThis.navigator?.mediaDevices) {
  if (!mediaDevices || typeof mediaDevices.getUserMedia !== 'function') {
    return {
      stream: null,
      problem: 'This browser cannot use a camera here (a secure https:// page or localhost is needed). You can still receive calls.',
    };
  }
  let firstError = null;
  for (const constraints of ATTEMPTS) {
    try {
      const stream = await mediaDevices.getUserMedia(constraints);
      if (constraints.audio && constraints.video) return { stream, problem: null };
      const missing = constraints.video ? 'microphone' : 'camera';
      return { stream, problem: `No ${missing} available (${explain(firstError)}); calls go on without it.` };
    } catch (err) {
      firstError ??= err;
      // Permission refused: asking again for less will be refused too.
      if (err && err.name === 'NotAllowedError') break;
    }
  }
  return {
    stream: null,
    problem: `Camera and microphone unavailable (${explain(firstError)}). You can still join calls and see the other side.`,
  };
}

function explain(err) {
  switch (err?.name) {
    case 'NotAllowedError':
      return 'permission denied';
    case 'NotFoundError':
      return 'no device found';
    case 'NotReadableError':
      return 'the device is in use by another program';
    case 'OverconstrainedError':
      return 'no device fits';
    default:
      return err?.message || err?.name || 'unknown error';
  }
}
