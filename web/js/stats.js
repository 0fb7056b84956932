// Numbers shown during a call: the call timer and a one-line summary of
// RTCPeerConnection.getStats() (received resolution, bitrate, round-trip time).
// Pure functions over plain stats objects, so they run under Node too.

/** 65000 ms -> "01:05"; an hour or more -> "1:01:05". */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

/**
 * Summarise one getStats() report.
 * @param {Iterable<object>} reports the report's values (`report.values()`)
 * @param {object | null} previous the summary from the last sample, for rates
 */
export function summarizeStats(reports, previous = null) {
  const byId = new Map();
  let inbound = null;
  let outbound = null;
  let pairId = null;
  let nominatedPair = null;
  for (const s of reports) {
    byId.set(s.id, s);
    if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
    else if (s.type === 'outbound-rtp' && s.kind === 'video') outbound = s;
    else if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') nominatedPair = s;
  }
  const pair = (pairId && byId.get(pairId)) || nominatedPair;
  const timestamp = inbound?.timestamp ?? pair?.timestamp ?? null;
  const bytesReceived = inbound?.bytesReceived ?? null;
  let inKbps = null;
  if (previous && bytesReceived !== null && previous.bytesReceived !== null && timestamp > previous.timestamp) {
    const seconds = (timestamp - previous.timestamp) / 1000;
    inKbps = Math.max(0, Math.round(((bytesReceived - previous.bytesReceived) * 8) / 1000 / seconds));
  }
  const rtt = pair?.currentRoundTripTime;
  let route = null;
  if (pair) {
    const local = byId.get(pair.localCandidateId);
    const remote = byId.get(pair.remoteCandidateId);
    if (local?.candidateType === 'relay' || remote?.candidateType === 'relay') route = 'relayed';
    else if (local || remote) route = 'direct';
  }
  return {
    timestamp,
    bytesReceived,
    width: inbound?.frameWidth ?? null,
    height: inbound?.frameHeight ?? null,
    fps: inbound?.framesPerSecond ?? null,
    framesDecoded: inbound?.framesDecoded ?? 0,
    sentWidth: outbound?.frameWidth ?? null,
    sentHeight: outbound?.frameHeight ?? null,
    inKbps,
    rttMs: typeof rtt === 'number' ? Math.round(rtt * 1000) : null,
    route,
  };
}

/** "640×480 · 30 fps · 1200 kbit/s · RTT 4 ms · direct" (parts omitted when unknown). */
export function formatStats(summary) {
  const parts = [];
  if (summary.width && summary.height) parts.push(`${summary.width}×${summary.height}`);
  if (summary.fps) parts.push(`${Math.round(summary.fps)} fps`);
  if (summary.inKbps !== null) parts.push(`${summary.inKbps} kbit/s`);
  if (summary.rttMs !== null) parts.push(`RTT ${summary.rttMs} ms`);
  if (summary.route) parts.push(summary.route);
  return parts.length > 0 ? parts.join(' · ') : 'waiting for video…';
}
