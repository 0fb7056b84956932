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

test('refresh: a new socket at once; the old one still delivers until it closes, quietly', async () => {
  FakeWebSocket.instances = [];
  const s = new Signaling('ws://h/ws', { WebSocketImpl: FakeWebSocket, delay: () => 1 });
  const events = [];
  for (const type of ['open', 'down', 'message', 'replaced']) s.addEventListener(type, (e) => events.push([type, e.detail]));
  s.start();
  const old = FakeWebSocket.instances[0];
  old.serverOpen();
  s.refresh();
  assert.equal(FakeWebSocket.instances.length, 2, 'connecting again without waiting');
  assert.equal(s.isOpen, false);
  const fresh = FakeWebSocket.instances[1];
  old.serverSend({ type: 'offer', name: 'a' }); // sent before the takeover: still ours
  fresh.serverOpen();
  old.serverClose(4000); // the takeover closes the old one
  assert.equal(s.isOpen, true);
  assert.deepEqual(events.map(([t]) => t), ['open', 'message', 'open']);
  await new Promise((ok) => setTimeout(ok, 10));
  assert.equal(FakeWebSocket.instances.length, 2, 'no reconnect for the old socket');
  s.stop();
});

test('close 4000 on the current socket: replaced, and no reconnect', async () => {
  FakeWebSocket.instances = [];
  const s = new Signaling('ws://h/ws', { WebSocketImpl: FakeWebSocket, delay: () => 1 });
  const events = [];
  for (const type of ['down', 'replaced']) s.addEventListener(type, (e) => events.push(type));
  s.start();
  FakeWebSocket.instances[0].serverOpen();
  FakeWebSocket.instances[0].serverClose(4000);
  await new Promise((ok) => setTimeout(ok, 10));
  assert.deepEqual(events, ['replaced']);
  assert.equal(FakeWebSocket.instances.length, 1);
});
