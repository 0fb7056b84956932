// Calls that survive: a reload re-joins, the peer accepts the re-join, notices of a
// reconnecting peer, ICE restarts. The controller with a fake socket, page and peer
// connection (the browser tests in resume.test.js do the same against the real thing).

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { App } from '../../web/js/app.js';
import { Signaling } from '../../web/js/signaling.js';
import { SessionStore } from '../../web/js/session-store.js';
import { DISCONNECTED_GRACE_MS, ANSWERER_LEAD_MS, RETRY_MS, REJOIN_GRACE_MS } from '../../web/js/recovery.js';
import { FakePeerConnection, FakeWebSocket, fakeStorage, fakeUi, settle } from './fakes.js';

globalThis.RTCPeerConnection = FakePeerConnection;

let current;

afterEach(() => current?.ui.handlers.hangup());

/** An app for `name` whose tab has `saved` in its sessionStorage (null: a fresh tab). */
function page(name, saved = null) {
  FakeWebSocket.instances = [];
  FakePeerConnection.instances = [];
  const ui = fakeUi();
  const storage = fakeStorage(saved ? [['duet.session', JSON.stringify(saved)]] : []);
  const store = new SessionStore(storage);
  const app = new App({
    signaling: new Signaling('ws://t/ws', { WebSocketImpl: FakeWebSocket, delay: () => 5 }),
    ui,
    openMedia: async () => ({ stream: null }),
    store,
    log: () => {},
  });
  app.start();
  const ws = FakeWebSocket.instances[0];
  current = { name, ui, app, store, ws: () => FakeWebSocket.instances.at(-1) };
  return { ...current, first: ws };
}

const sdp = (kind, fingerprint) => ({ type: kind, sdp: `${kind}\na=fingerprint:${fingerprint}\n` });
const loginOk = (name, extra = {}) => ({ type: 'login', success: true, name, iceServers: [], users: [], resumeToken: 'tok-new', ...extra });
const lastPc = () => FakePeerConnection.instances.at(-1);
/** settle() for tests on mock timers (it waits on a real setTimeout): run queued promise steps. */
async function flush() {
  for (let i = 0; i < 20; i += 1) await Promise.resolve();
}

/** bob, signed in and in a connected call that alice started (her connection: fingerprint `fp`). Mock-timer safe. */
async function inCallWithAlice(fp = 'sha-256 aa:aa') {
  const p = page('bob');
  p.first.serverOpen();
  p.ui.handlers.login('bob');
  p.first.serverSend(loginOk('bob', { resumeToken: 'tok-1' }));
  await flush();
  p.first.serverSend({ type: 'offer', name: 'alice', offer: sdp('offer', fp) });
  await p.ui.handlers.accept();
  const pc = lastPc();
  pc.setConnected();
  p.first.sent.length = 0;
  return { ...p, pc };
}

test('in a call, the tab keeps name, token and call (peer, fingerprint) for a reload', async () => {
  const { store } = await inCallWithAlice('sha-256 aa:aa');
  const saved = store.load();
  assert.equal(saved.name, 'bob');
  assert.equal(saved.token, 'tok-1');
  assert.equal(saved.call.peer, 'alice');
  assert.equal(saved.call.answered, true);
  assert.equal(saved.call.fingerprint, 'sha-256 aa:aa');
  assert.ok(saved.call.since > 0);
});

test('reload in a call: no sign-in form; resumes with the token naming the call, then re-joins with a new offer', async () => {
  const since = Date.now() - 65_000;
  const { ui, first, app } = page('bob', {
    name: 'bob',
    token: 'tok-1',
    call: { peer: 'alice', answered: true, role: 'callee', since, fingerprint: 'sha-256 aa:aa' },
  });
  assert.equal(ui.page, 'call');
  assert.match(ui.callStatus, /rejoining the call with alice/i);
  first.serverOpen();
  assert.deepEqual(first.sent, [{ type: 'login', name: 'bob', resume: true, presenceBatch: true, resumeToken: 'tok-1', call: 'alice' }]);
  first.serverSend(loginOk('bob', { resumed: true }));
  await settle();
  await settle();
  const pc = lastPc();
  const offers = first.sent.filter((m) => m.type === 'offer');
  assert.deepEqual(offers, [{ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: pc.localDescription.sdp } }]);
  assert.equal(app.debugState.call, 'connecting');
  assert.equal(app.debugState.rejoins, 1);

  // A late answer from alice's old connection is dropped; her new one's is applied.
  first.serverSend({ type: 'answer', name: 'alice', answer: sdp('answer', 'sha-256 aa:aa') });
  await settle();
  assert.equal(pc.remoteDescription, null);
  first.serverSend({ type: 'answer', name: 'alice', answer: sdp('answer', 'sha-256 bb:bb') });
  await settle();
  assert.equal(pc.remoteDescription.sdp, sdp('answer', 'sha-256 bb:bb').sdp);
  pc.setConnected();
  assert.equal(app.debugState.call, 'connected');
  assert.match(ui.callStatus, /in a call with alice/i);
  assert.equal(ui.timer, '01:05', 'the call timer goes on from before the reload');
});

test('reload while it rang: the attempt is called off, and the page says so', async () => {
  const { ui, first } = page('bob', { name: 'bob', token: 'tok-1', call: { peer: 'alice', answered: false, role: 'caller' } });
  first.serverOpen();
  assert.deepEqual(first.sent, [{ type: 'login', name: 'bob', resume: true, presenceBatch: true, resumeToken: 'tok-1' }]);
  first.serverSend(loginOk('bob', { resumed: true }));
  await settle();
  assert.deepEqual(first.sent.at(-1), { type: 'leave', name: 'alice', reason: 'cancelled' });
  assert.match(ui.callStatus, /call to alice was interrupted by the reload/);
  assert.equal(ui.view, 'idle');
});

test('the peer re-joins (an offer from a new connection): answered on a new connection, no Accept', async () => {
  const { ui, first, pc, app } = await inCallWithAlice('sha-256 aa:aa');
  first.serverSend({ type: 'reconnecting', name: 'alice' });
  assert.equal(ui.callStatus, 'alice is reconnecting…');
  assert.equal(app.debugState.peerAway, true);
  first.serverSend({ type: 'resumed', name: 'alice' });
  assert.match(ui.callStatus, /in a call with alice/i);
  first.serverSend({ type: 'offer', name: 'alice', offer: sdp('offer', 'sha-256 cc:cc') });
  first.serverSend({ type: 'candidate', name: 'alice', candidate: { candidate: 'new-1' } });
  await settle();
  await settle();
  const fresh = lastPc();
  assert.notEqual(fresh, pc);
  assert.equal(pc.closed, true, 'the old connection is closed');
  assert.equal(ui.view, 'connected', 'still the same call: nothing to accept');
  assert.deepEqual(first.sent.filter((m) => m.type === 'answer'), [{ type: 'answer', name: 'alice', answer: { type: 'answer', sdp: fresh.localDescription.sdp } }]);
  assert.deepEqual(fresh.added, [{ candidate: 'new-1' }], 'candidates after the re-join offer go to the new connection');
  assert.equal(app.debugState.pc, fresh);

  // Something late from the old connection changes nothing.
  first.serverSend({ type: 'offer', name: 'alice', offer: sdp('offer', 'sha-256 aa:aa') });
  await settle();
  assert.equal(lastPc(), fresh);
  assert.equal(first.sent.filter((m) => m.type === 'answer').length, 1);
});

test('a renegotiation or ICE restart (same fingerprint) is answered on the same connection', async () => {
  const { first, pc } = await inCallWithAlice('sha-256 aa:aa');
  first.serverSend({ type: 'offer', name: 'alice', offer: sdp('offer', 'sha-256 aa:aa') });
  await settle();
  await settle();
  assert.equal(lastPc(), pc);
  assert.equal(first.sent.filter((m) => m.type === 'answer').length, 1);
});

test('the peer gone for good: reconnecting, then leave after the window; the reason stays up', async () => {
  const { ui, first } = await inCallWithAlice();
  first.serverSend({ type: 'reconnecting', name: 'alice' });
  assert.equal(ui.view, 'connected');
  first.serverSend({ type: 'leave', name: 'alice', reason: 'disconnected' });
  assert.equal(ui.view, 'idle');
  assert.equal(ui.callStatus, 'alice disconnected; the call has ended.');
  // The server dropping and coming back does not overwrite it.
  first.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 20));
  const next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  next.serverSend(loginOk('bob', { resumed: true }));
  assert.equal(ui.callStatus, 'alice disconnected; the call has ended.');
});

test('ICE restart: the side whose name sorts first restarts after the path is gone a few seconds', async (t) => {
  // alice < bob: alice restarts. Here we are alice, the callee.
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const p = page('alice');
  p.first.serverOpen();
  p.ui.handlers.login('alice');
  p.first.serverSend(loginOk('alice'));
  await flush();
  p.first.serverSend({ type: 'offer', name: 'bob', offer: sdp('offer', 'sha-256 bb:bb') });
  await p.ui.handlers.accept();
  const pc = lastPc();
  pc.setConnected();
  pc.setDisconnected();
  assert.match(p.ui.callStatus, /interrupted; reconnecting/);
  t.mock.timers.tick(DISCONNECTED_GRACE_MS - 1);
  assert.equal(FakeWebSocket.instances.length, 1);
  t.mock.timers.tick(1);
  // First the signaling is refreshed (it may be dead after a change of network)...
  assert.equal(FakeWebSocket.instances.length, 2);
  const fresh = FakeWebSocket.instances[1];
  fresh.serverOpen();
  assert.deepEqual(fresh.sent, [{ type: 'login', name: 'alice', resume: true, presenceBatch: true, resumeToken: 'tok-new', call: 'bob' }]);
  assert.equal(pc.iceRestarts, 0, 'no restart before the resume is through');
  fresh.serverSend(loginOk('alice', { resumed: true }));
  t.mock.timers.tick(0);
  await flush();
  await flush();
  // ...then the restart offer goes out on the new socket.
  assert.equal(pc.iceRestarts, 1);
  assert.deepEqual(fresh.sent.filter((m) => m.type === 'offer').map((m) => m.offer.sdp), [pc.localDescription.sdp]);
  assert.equal(p.app.debugState.iceRestarts, 1);
  // No path yet: tried again.
  t.mock.timers.tick(RETRY_MS);
  await flush();
  await flush();
  assert.equal(pc.iceRestarts, 2);
  fresh.serverSend({ type: 'answer', name: 'bob', answer: sdp('answer', 'sha-256 bb:bb') });
  await flush();
  pc.setConnected();
  assert.match(p.ui.callStatus, /in a call with bob/i);
  t.mock.timers.tick(RETRY_MS * 4);
  await flush();
  assert.equal(pc.iceRestarts, 2, 'no restart once the path is back');
});

test('the side whose name sorts later never restarts; it refreshes its signaling to hear the offer', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { pc } = await inCallWithAlice(); // we are bob
  pc.setDisconnected();
  t.mock.timers.tick(DISCONNECTED_GRACE_MS - ANSWERER_LEAD_MS);
  assert.equal(FakeWebSocket.instances.length, 2, 'signaling refreshed');
  FakeWebSocket.instances[1].serverOpen();
  FakeWebSocket.instances[1].serverSend(loginOk('bob', { resumed: true }));
  t.mock.timers.tick(RETRY_MS * 10);
  await flush();
  assert.equal(pc.iceRestarts, 0);
  assert.equal(FakeWebSocket.instances[1].sent.filter((m) => m.type === 'offer').length, 0);
});

test('no ICE restart while the peer is away; after it is back, a grace period for its re-join', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const p = page('alice');
  p.first.serverOpen();
  p.ui.handlers.login('alice');
  p.first.serverSend(loginOk('alice'));
  await flush();
  p.first.serverSend({ type: 'offer', name: 'bob', offer: sdp('offer', 'sha-256 bb:bb') });
  await p.ui.handlers.accept();
  const pc = lastPc();
  pc.setConnected();
  p.first.serverSend({ type: 'reconnecting', name: 'bob' });
  pc.setFailed();
  assert.equal(p.ui.callStatus, 'bob is reconnecting…', 'the media trouble does not hide why');
  t.mock.timers.tick(0);
  FakeWebSocket.instances.at(-1).serverOpen();
  FakeWebSocket.instances.at(-1).serverSend(loginOk('alice', { resumed: true }));
  t.mock.timers.tick(RETRY_MS * 3);
  await flush();
  assert.equal(pc.iceRestarts, 0, 'bob is away');
  const ws = FakeWebSocket.instances.at(-1);
  ws.serverSend({ type: 'resumed', name: 'bob' });
  t.mock.timers.tick(REJOIN_GRACE_MS - 1);
  assert.equal(pc.iceRestarts, 0);
  t.mock.timers.tick(1);
  await flush();
  assert.equal(pc.iceRestarts, 1, 'bob came back without a re-join: restart');
});
