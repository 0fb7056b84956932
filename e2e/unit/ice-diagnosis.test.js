// Why a call found no media path (web/js/ice-diagnosis.js): the evidence to the words.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diagnose, hasTurn, isTurnUrl } from '../../web/js/ice-diagnosis.js';

const turn = [{ urls: ['turn:t:3478?transport=udp', 'turns:t:443?transport=tcp'], username: 'u', credential: 'c' }];

test('TURN servers are recognised in iceServers, whatever the shape of urls', () => {
  assert.equal(hasTurn(turn), true);
  assert.equal(hasTurn([{ urls: 'turns:t:443' }]), true);
  assert.equal(hasTurn([{ urls: ['stun:s:3478'] }]), false);
  assert.equal(hasTurn([]), false);
  assert.equal(hasTurn(undefined), false);
  assert.equal(isTurnUrl('stun:s'), false);
});

test('a refusal by a TURN server comes first; an unreachable one (701) is no refusal', () => {
  const unreachable = { url: 'turn:t:3478?transport=udp', code: 701, text: 'timeout' };
  const quota = { url: 'turns:t:443?transport=tcp', code: 486, text: 'Allocation Quota Reached' };
  const stun = { url: 'stun:s:3478', code: 401, text: '' };
  const refused = diagnose({ peer: 'ann', turnConfigured: true, errors: [unreachable, quota], localTypes: new Set(['host']) });
  assert.equal(refused.kind, 'turn-refused');
  assert.match(refused.text, /486 Allocation Quota Reached: too many relays/);
  const none = diagnose({ peer: 'ann', turnConfigured: true, errors: [unreachable, stun], localTypes: new Set(['host']) });
  assert.equal(none.kind, 'no-path');
  assert.match(none.text, /TURN relay could not be reached/);
});

test('no TURN configured, no relay gathered, a relay gathered: three different sentences', () => {
  const base = { peer: 'ann', errors: [] };
  assert.equal(diagnose({ ...base, turnConfigured: false, localTypes: new Set(['host']) }).kind, 'no-turn');
  const unreachable = diagnose({ ...base, turnConfigured: true, localTypes: new Set(['host', 'srflx']) });
  const relayed = diagnose({ ...base, turnConfigured: true, localTypes: new Set(['host', 'relay']) });
  assert.match(unreachable.text, /^No network path to ann: the TURN relay could not be reached/);
  assert.match(relayed.text, /^No network path to ann: the relay was reached, but ann could not be reached/);
});
