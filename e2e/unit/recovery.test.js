// The ICE restart policy on its own: fed inputs, with a hand-driven clock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ANSWERER_LEAD_MS, DISCONNECTED_GRACE_MS, MAX_RESTARTS, MediaRecovery, RETRY_MS } from '../../web/js/recovery.js';

/** A MediaRecovery whose timers run when `advance` says so, recording what it asks for. */
function recovery({ restarter, canRestart = () => true, socketOpen = true }) {
  let now = 0;
  let timers = [];
  const did = [];
  const r = new MediaRecovery({
    restarter,
    after: (ms, fn) => timers.push({ at: now + ms, fn }),
    canRestart,
    restart: () => did.push(`restart@${now}`),
    refreshSignaling: () => {
      did.push(`refresh@${now}`);
      return socketOpen;
    },
  });
  const advance = (ms) => {
    const end = now + ms;
    for (;;) {
      timers.sort((a, b) => a.at - b.at);
      const next = timers[0];
      if (!next || next.at > end) break;
      timers = timers.slice(1);
      now = next.at;
      next.fn();
    }
    now = end;
  };
  return { r, did, advance };
}

test('disconnected: the restarting side refreshes after the grace, restarts once signaling is back, retries, then gives up', () => {
  const { r, did, advance } = recovery({ restarter: true });
  r.pathLost(false);
  advance(DISCONNECTED_GRACE_MS - 1);
  assert.deepEqual(did, []);
  advance(1);
  assert.deepEqual(did, [`refresh@${DISCONNECTED_GRACE_MS}`]);
  advance(10_000);
  assert.equal(did.length, 1, 'no restart before the resume is through');
  r.signalingReady();
  advance(0);
  assert.equal(did.at(-1), `restart@${DISCONNECTED_GRACE_MS + 10_000}`);
  advance(RETRY_MS * 100);
  assert.equal(did.filter((d) => d.startsWith('restart')).length, MAX_RESTARTS);
});

test('the answering side refreshes a second earlier and never restarts', () => {
  const { r, did, advance } = recovery({ restarter: false });
  r.pathLost(false);
  advance(DISCONNECTED_GRACE_MS - ANSWERER_LEAD_MS);
  assert.deepEqual(did, [`refresh@${DISCONNECTED_GRACE_MS - ANSWERER_LEAD_MS}`]);
  r.signalingReady();
  advance(60_000);
  assert.equal(did.length, 1);
});

test("failed acts at once; a stall too (the restarting side after the answerer's lead)", () => {
  const a = recovery({ restarter: true, socketOpen: false });
  a.r.pathLost(true);
  a.advance(0);
  // The socket was not open (it reconnects on its own): straight to the restart.
  assert.deepEqual(a.did, ['refresh@0', 'restart@0']);
  const b = recovery({ restarter: true });
  b.r.mediaStalled();
  b.advance(ANSWERER_LEAD_MS);
  assert.deepEqual(b.did, [`refresh@${ANSWERER_LEAD_MS}`]);
});

test('media back stops everything; while the peer is away nothing is restarted until it is back', () => {
  const { r, did, advance } = recovery({ restarter: true });
  r.pathLost(false);
  advance(1000);
  r.mediaFlowing();
  advance(60_000);
  assert.deepEqual(did, []);
  assert.equal(r.lost, false);

  let away = true;
  const p = recovery({ restarter: true, canRestart: () => !away, socketOpen: false });
  p.r.pathLost(true);
  p.advance(60_000);
  assert.deepEqual(p.did, ['refresh@0']);
  away = false;
  p.r.peerBack();
  p.advance(60_000);
  assert.ok(p.did.some((d) => d.startsWith('restart')));
});
