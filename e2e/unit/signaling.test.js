import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Signaling, backoffDelay } from '../../web/js/signaling.js';
import { FakeWebSocket } from './fakes.js';

test('backoff doubles up to a ceiling, with jitter between half and all of it', () => {
  const top = (n) => backoffDelay(n, { random: () => 1 });
  const bottom = (n) => backoffDelay(n, { random: () => 0 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 10].map(top), [500, 1000, 2000, 4000, 8000, 8000, 8000]);
  assert.deepEqual([0, 1, 2].map(bottom), [250, 500, 1000]);
});

test('reconnects after a drop, reports each step, and parses messages', async () => {
  FakeWebSocket.instances = [];
  const delays = [];
  const s = new Signaling('ws://h/ws', {
    WebSocketImpl: FakeWebSocket,
    delay: (attempt) => {
      delays.push(attempt);
      return 1;
    },
  });
  const events = [];
  for (const type of ['open', 'down', 'message', 'garbage']) {
    s.addEventListener(type, (e) => events.push([type, e.detail]));
  }
  s.start();
  assert.equal(s.send({ type: 'x' }), false, 'nothing is sent before open');
  const first = FakeWebSocket.instances[0];
  first.serverOpen();
  assert.equal(s.isOpen, true);
  assert.equal(s.send({ type: 'login', name: 'a' }), true);
  assert.deepEqual(first.sent, [{ type: 'login', name: 'a' }]);
  first.serverSend({ type: 'users', users: [] });
  first.serverSend('Hello world');
  first.serverClose(1001);
  assert.equal(s.isOpen, false);

  await new Promise((ok) => setTimeout(ok, 10));
  const second = FakeWebSocket.instances[1];
  assert.ok(second, 'a new socket was opened');
  second.serverClose(1006); // server still down
  await new Promise((ok) => setTimeout(ok, 10));
  const third = FakeWebSocket.instances[2];
  third.serverOpen();
  assert.deepEqual(delays, [0, 1], 'attempt counter grows while down');

  assert.deepEqual(events.map(([t]) => t), ['open', 'message', 'garbage', 'down', 'down', 'open']);
  assert.deepEqual(events[0][1], { reconnect: false });
  assert.deepEqual(events[1][1], { type: 'users', users: [] });
  assert.equal(events[3][1].code, 1001);
  assert.equal(events[3][1].everOpened, true);
  assert.deepEqual(events[5][1], { reconnect: true });

  third.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 10));
  assert.equal(delays.at(-1), 0, 'a successful open resets the backoff');
  s.stop();
  const count = FakeWebSocket.instances.length;
  await new Promise((ok) => setTimeout(ok, 10));
  assert.equal(FakeWebSocket.instances.length, count, 'no reconnect after stop()');
});
