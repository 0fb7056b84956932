import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration, formatStats, summarizeStats } from '../../web/js/stats.js';

test('durations', () => {
  assert.equal(formatDuration(0), '00:00');
  assert.equal(formatDuration(65_400), '01:05');
  assert.equal(formatDuration(3_661_000), '1:01:01');
  assert.equal(formatDuration(-5), '00:00');
});

const report = (t, bytes) => [
  { id: 'IT1', type: 'inbound-rtp', kind: 'video', timestamp: t, bytesReceived: bytes, frameWidth: 640, frameHeight: 480, framesPerSecond: 29.7, framesDecoded: 100 },
  { id: 'IA1', type: 'inbound-rtp', kind: 'audio', timestamp: t, bytesReceived: 99 },
  { id: 'T1', type: 'transport', selectedCandidatePairId: 'CP1' },
  { id: 'CP1', type: 'candidate-pair', localCandidateId: 'L', remoteCandidateId: 'R', currentRoundTripTime: 0.0123, nominated: true, state: 'succeeded' },
  { id: 'L', type: 'local-candidate', candidateType: 'host' },
  { id: 'R', type: 'remote-candidate', candidateType: 'relay' },
];

test('resolution, bitrate from two samples, RTT, route', () => {
  const first = summarizeStats(report(1000, 0));
  assert.equal(first.inKbps, null, 'no rate from one sample');
  const second = summarizeStats(report(2000, 125_000), first);
  assert.equal(second.inKbps, 1000);
  assert.equal(second.rttMs, 12);
  assert.equal(second.route, 'relayed');
  assert.equal(formatStats(second), '640×480 · 30 fps · 1000 kbit/s · RTT 12 ms · relayed');
});

test('an empty report says it is waiting', () => {
  const s = summarizeStats([]);
  assert.equal(formatStats(s), 'waiting for video…');
  assert.equal(s.framesDecoded, 0);
});

test('qualityLevel: the worst of RTT, loss and bitrate decides', async () => {
  const { qualityLevel } = await import('../../web/js/stats.js');
  const base = { rttMs: 20, lossPct: 0, inKbps: 1200, fps: 30 };
  assert.equal(qualityLevel(null), 0);
  assert.equal(qualityLevel({ rttMs: null, lossPct: null, inKbps: null }), 0);
  assert.equal(qualityLevel(base), 4);
  assert.equal(qualityLevel({ ...base, rttMs: 300 }), 2);
  assert.equal(qualityLevel({ ...base, lossPct: 12 }), 1);
  assert.equal(qualityLevel({ ...base, inKbps: 200 }), 3);
  assert.equal(qualityLevel({ ...base, inKbps: 10, fps: 0 }), 4, 'camera off: low bitrate is no sign of trouble');
});
