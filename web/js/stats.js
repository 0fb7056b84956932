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
  const packetsReceived = inbound?.packetsReceived ?? null;
  const packetsLost = inbound?.packetsLost ?? null;
  let lossPct = null;
  if (previous && packetsReceived !== null && packetsLost !== null && previous.packetsReceived != null) {
    const got = packetsReceived - previous.packetsReceived;
    const lost = Math.max(0, packetsLost - (previous.packetsLost ?? 0));
    if (got + lost > 0) lossPct = (100 * lost) / (got + lost);
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
    packetsReceived,
    packetsLost,
    lossPct,
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

/** The words for each quality level, for the bars' accessible name. */
export const QUALITY_WORDS = Object.freeze(['unknown', 'bad', 'poor', 'fair', 'good']);

/**
 * A simple connection-quality level from one summary: 4 good, 3 fair, 2 poor, 1 bad, 0
 * unknown (no sample yet). The worst of round-trip time, packet loss and received bitrate
 * decides; thresholds follow the usual rules of thumb for interactive video (RTT under
 * 150 ms and loss under 1% feel fine; over 400 ms or 10% the call breaks up).
 */
export function qualityLevel(summary) {
  if (!summary) return 0;
  const { rttMs, lossPct, inKbps } = summary;
  if (rttMs === null && lossPct === null && inKbps === null) return 0;
  let level = 4;
  if (rttMs !== null) level = Math.min(level, rttMs < 150 ? 4 : rttMs < 250 ? 3 : rttMs < 400 ? 2 : 1);
  if (lossPct !== null) level = Math.min(level, lossPct < 1 ? 4 : lossPct < 3 ? 3 : lossPct < 10 ? 2 : 1);
  // A peer with the camera off sends almost nothing: low bitrate alone says little then.
  if (inKbps !== null && summary.fps) level = Math.min(level, inKbps >= 300 ? 4 : inKbps >= 150 ? 3 : inKbps >= 50 ? 2 : 1);
  return level;
}
