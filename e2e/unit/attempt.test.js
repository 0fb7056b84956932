// CallAttempt: what an attempt started stops when it closes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CallAttempt } from '../../web/js/attempt.js';
import { CallState } from '../../web/js/call-state.js';
import { settle } from './fakes.js';

/** An attempt whose peer connection only counts how often it was closed. */
function attempt() {
  const peerCall = { closes: 0, close() { this.closes += 1; } };
  const a = new CallAttempt({ peer: 'alice', role: 'caller', state: CallState.OUTGOING, createPeerCall: () => peerCall });
  return { a, peerCall };
}

/** A promise the test settles by hand. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

test('the peer connection is made for the attempt and gets it', () => {
  let given = null;
  const a = new CallAttempt({ peer: 'alice', role: 'callee', state: CallState.INCOMING, offer: { sdp: 'o' },
    createPeerCall: (attempt) => {
      given = attempt;
      return { close() {} };
    } });
  assert.equal(given, a);
  assert.deepEqual([a.peer, a.role, a.state, a.offer, a.closed], ['alice', 'callee', 'incoming', { sdp: 'o' }, false]);
});

test('timers run while the attempt is open and are cleared when it closes', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { a } = attempt();
  const fired = [];
  a.after(100, () => fired.push('once'));
  a.every(40, () => fired.push('tick'));
  a.after(1000, () => fired.push('late'));
  t.mock.timers.tick(100);
  assert.deepEqual(fired, ['tick', 'tick', 'once']);
  a.close();
  t.mock.timers.tick(5000);
  assert.deepEqual(fired, ['tick', 'tick', 'once'], 'nothing fires after close');
  a.after(1, () => fired.push('after close'));
  a.every(1, () => fired.push('after close'));
  t.mock.timers.tick(10);
  assert.deepEqual(fired, ['tick', 'tick', 'once'], 'a closed attempt starts no timers');
});

test('close is idempotent: the peer connection is closed once', () => {
  const { a, peerCall } = attempt();
  a.close();
  a.close();
  assert.equal(a.closed, true);
  assert.equal(peerCall.closes, 1);
});

test('whileOpen handlers do nothing once the attempt is over', () => {
  const { a } = attempt();
  const seen = [];
  const handler = a.whileOpen((x) => {
    seen.push(x);
    return x * 2;
  });
  assert.equal(handler(1), 2);
  a.close();
  assert.equal(handler(2), undefined);
  assert.deepEqual(seen, [1]);
});

test('a step settles like its work while the attempt is open', async () => {
  const { a } = attempt();
  assert.equal(await a.step(Promise.resolve('offer')), 'offer');
  assert.equal(await a.step('not a promise'), 'not a promise');
  await assert.rejects(a.step(Promise.reject(new Error('pc failed'))), /pc failed/);
});

test('a step that finishes after the attempt closed is dropped: neither its value nor its error goes on', async () => {
  const { a } = attempt();
  const ok = deferred();
  const bad = deferred();
  const after = [];
  const run = async (work, name) => {
    try {
      await a.step(work);
      after.push(`${name} resumed`);
    } catch {
      after.push(`${name} caught`);
    }
  };
  run(ok.promise, 'ok');
  run(bad.promise, 'bad');
  a.close();
  ok.resolve('answer');
  bad.reject(new Error('closed pc'));
  await settle();
  assert.deepEqual(after, []);
});
