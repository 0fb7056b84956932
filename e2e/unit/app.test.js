// The call controller's message handling, with a fake socket, page and peer connection.

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { App } from '../../web/js/app.js';
import { Signaling } from '../../web/js/signaling.js';
import { SessionStore } from '../../web/js/session-store.js';
import { FakePeerConnection, FakeWebSocket, fakeStorage, fakeUi, settle } from './fakes.js';

globalThis.RTCPeerConnection = FakePeerConnection;

let ui;
let app;
let ws;
let storage;
let store;

/** A logged-in app named `name`, with no camera (no MediaStream under Node). */
async function loggedIn(name = 'bob', reply = {}) {
  FakeWebSocket.instances = [];
  FakePeerConnection.instances = [];
  ui = fakeUi();
  storage = fakeStorage();
  store = new SessionStore(storage);
  const signaling = new Signaling('ws://test/ws', { WebSocketImpl: FakeWebSocket, delay: () => 5 });
  app = new App({
    signaling,
    ui,
    openMedia: async () => ({ stream: null, problem: 'no camera' }),
    options: {},
    store,
    log: () => {},
  });
  app.start();
  ws = FakeWebSocket.instances[0];
  ws.serverOpen();
  ui.handlers.login(`  ${name} `);
  assert.deepEqual(ws.sent.at(-1), { type: 'login', name, resume: true, presenceBatch: true });
  ws.serverSend({ type: 'login', success: true, name, iceServers: [{ urls: ['stun:s:3478'] }], users: ['alice', name], resumeToken: 'tok-1', ...reply });
  await settle();
  ws.sent.length = 0;
}

const last = () => FakePeerConnection.instances.at(-1);
const sent = (type) => ws.sent.filter((m) => m.type === type);

beforeEach(() => loggedIn());
// End any call so its timers stop (else the test process never exits).
afterEach(() => ui.handlers.hangup());

test('login: the call page shows, users exclude ourselves, ICE servers come from the server', async () => {
  assert.equal(ui.page, 'call');
  assert.deepEqual(ui.users, ['alice']);
  ws.serverSend({ type: 'presence', name: 'carol', online: true });
  ws.serverSend({ type: 'presence', name: 'alice', online: false });
  assert.deepEqual(ui.users, ['carol']);
  ui.handlers.call('carol');
  await settle();
  assert.deepEqual(last().config.iceServers, [{ urls: ['stun:s:3478'] }]);
  assert.equal(last().config.iceTransportPolicy, undefined);
});

test('a presence-batch updates the user list in one go, never listing ourselves', () => {
  ws.serverSend({ type: 'presence-batch', online: ['dave', 'erin', 'bob', 'frank'], offline: ['carol'] });
  for (const n of ['dave', 'erin', 'frank']) assert.ok(ui.users.includes(n), `${n} listed`);
  assert.ok(!ui.users.includes('carol'));
  assert.ok(!ui.users.includes('bob'), 'our own name is not listed');
  ws.serverSend({ type: 'presence-batch', online: [], offline: ['dave', 'erin', 'frank'] });
  for (const n of ['dave', 'erin', 'frank']) assert.ok(!ui.users.includes(n), `${n} gone`);
});

test('?relay=1 makes every peer connection relay-only', async () => {
  FakeWebSocket.instances = [];
  ui = fakeUi();
  app = new App({
    signaling: new Signaling('ws://t/ws', { WebSocketImpl: FakeWebSocket }),
    ui,
    openMedia: async () => ({ stream: null }),
    options: { relayOnly: true },
    log: () => {},
  });
  app.start();
  ws = FakeWebSocket.instances[0];
  ws.serverOpen();
  ui.handlers.login('bob');
  ws.serverSend({ type: 'login', success: true, name: 'bob', iceServers: [{ urls: ['turn:t:3478'], username: 'u', credential: 'c' }], users: [] });
  await settle();
  await ui.handlers.call('alice');
  assert.equal(last().config.iceTransportPolicy, 'relay');
  assert.deepEqual(last().config.iceServers, [{ urls: ['turn:t:3478'], username: 'u', credential: 'c' }]);
});

test('login refused: the reason is shown on the login page', async () => {
  FakeWebSocket.instances = [];
  ui = fakeUi();
  app = new App({ signaling: new Signaling('ws://t/ws', { WebSocketImpl: FakeWebSocket }), ui, openMedia: async () => ({ stream: null }), log: () => {} });
  app.start();
  FakeWebSocket.instances[0].serverOpen();
  ui.handlers.login('alice');
  FakeWebSocket.instances[0].serverSend({ type: 'login', success: false, code: 'name-taken', message: 'The name "alice" is already in use; choose another.' });
  assert.equal(ui.page, 'login');
  assert.match(ui.loginStatus, /already in use/);
});

test('incoming call: candidates before Accept are queued, then applied after the offer', async () => {
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  ws.serverSend({ type: 'candidate', name: 'alice', candidate: { candidate: 'c1' } });
  ws.serverSend({ type: 'candidate', name: 'alice', candidate: { candidate: 'c2' } });
  await settle();
  assert.equal(ui.view, 'incoming');
  assert.equal(ui.callStatus, 'alice is calling');
  assert.equal(sent('answer').length, 0, 'no auto-answer');
  assert.equal(app.debugState.queuedCandidates, 2);

  await ui.handlers.accept();
  const pc = last();
  assert.deepEqual(pc.remoteDescription, { type: 'offer', sdp: 'o' });
  assert.deepEqual(pc.added, [{ candidate: 'c1' }, { candidate: 'c2' }]);
  assert.deepEqual(sent('answer'), [{ type: 'answer', name: 'alice', answer: { type: 'answer', sdp: pc.localDescription.sdp } }]);
  assert.equal(ui.view, 'connecting');

  ws.serverSend({ type: 'candidate', name: 'alice', candidate: { candidate: 'c3' } });
  ws.serverSend({ type: 'candidate', name: 'mallory', candidate: { candidate: 'evil' } });
  await settle();
  assert.deepEqual(pc.added.at(-1), { candidate: 'c3' }, 'candidates from others are ignored');

  pc.setConnected();
  assert.equal(ui.view, 'connected');
  assert.match(ui.callStatus, /in a call with alice/i);
});

test('caller: our candidates wait until the offer is sent; the answer opens the queue', async () => {
  const calling = ui.handlers.call('alice');
  const pc = last();
  pc.emitCandidate({ candidate: 'early' }); // before the offer went out
  await calling;
  assert.deepEqual(ws.sent.map((m) => m.type), ['offer', 'candidate']);
  assert.equal(ws.sent[0].name, 'alice');
  assert.deepEqual(ws.sent[1], { type: 'candidate', name: 'alice', candidate: { candidate: 'early' } });
  assert.deepEqual(pc.transceivers, [{ kind: 'audio', direction: 'recvonly' }, { kind: 'video', direction: 'recvonly' }], 'no camera: receive only');

  ws.serverSend({ type: 'candidate', name: 'alice', candidate: { candidate: 'r1' } });
  await settle();
  assert.deepEqual(pc.added, []);
  ws.serverSend({ type: 'answer', name: 'alice', answer: { type: 'answer', sdp: 'a' } });
  await settle();
  assert.deepEqual(pc.added, [{ candidate: 'r1' }]);
  assert.equal(ui.view, 'connecting');
});

test('errors answering our offer end the attempt and say why', async () => {
  for (const [code, re] of [['busy', /alice is busy/], ['not-online', /alice is not online/], ['cannot-call-self', /cannot call yourself/]]) {
    await ui.handlers.call('alice');
    ws.serverSend({ type: 'error', code, message: 'x', name: 'alice', request: 'offer' });
    assert.equal(ui.view, 'idle', code);
    assert.match(ui.callStatus, re);
    assert.equal(last().closed, true);
  }
});

test('leave reasons: declined, no-answer, cancelled; strangers cannot end our call', async () => {
  await ui.handlers.call('alice');
  ws.serverSend({ type: 'leave', name: 'mallory', reason: 'hangup' });
  assert.equal(ui.view, 'outgoing');
  ws.serverSend({ type: 'leave', name: 'alice', reason: 'declined' });
  assert.equal(ui.view, 'idle');
  assert.equal(ui.callStatus, 'alice declined the call.');

  await ui.handlers.call('alice');
  ws.serverSend({ type: 'leave', name: 'alice', reason: 'no-answer' });
  assert.match(ui.callStatus, /no answer/i);

  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  ws.serverSend({ type: 'leave', name: 'alice', reason: 'cancelled' });
  assert.equal(ui.view, 'idle');
  assert.equal(ui.callStatus, 'alice cancelled the call.');
});

test('decline, cancel and hang up send leave with the right reason', async () => {
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  ui.handlers.decline();
  await ui.handlers.call('alice');
  ui.handlers.hangup();
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  await ui.handlers.accept();
  ui.handlers.hangup();
  assert.deepEqual(sent('leave'), [
    { type: 'leave', name: 'alice', reason: 'declined' },
    { type: 'leave', name: 'alice', reason: 'cancelled' },
    { type: 'leave', name: 'alice', reason: 'hangup' },
  ]);
  assert.equal(ui.view, 'idle');
  assert.equal(ui.remoteStream, null);
  assert.equal(app.debugState.pc, null);
});

/** Lets the promise jobs run (the diagnosis awaits getStats), also under mocked timers. */
async function flush() {
  for (let i = 0; i < 20; i += 1) await Promise.resolve();
}

test('ICE failure ends the attempt: no network path, and no TURN server configured', async () => {
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  await ui.handlers.accept();
  last().setFailed();
  await flush();
  assert.match(ui.callStatus, /no network path to alice.*no TURN relay configured/i);
  assert.equal(ui.view, 'idle');
  assert.deepEqual(sent('leave').at(-1), { type: 'leave', name: 'alice', reason: 'no-path' });
});

test('a TURN server that refused is named as the reason', async () => {
  await loggedIn('bob', { iceServers: [{ urls: ['turn:t:3478?transport=udp'], username: 'u', credential: 'c' }] });
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  await ui.handlers.accept();
  const error = Object.assign(new Event('icecandidateerror'), {
    url: 'turn:t:3478?transport=udp',
    errorCode: 401,
    errorText: 'Unauthorized.',
  });
  last().dispatchEvent(error);
  last().setFailed();
  await flush();
  assert.match(ui.callStatus, /TURN server refused to relay \(401 Unauthorized: wrong or expired TURN credentials\)/);
});

test('the peer found no path: we say why from our side, and do not tell it back', async () => {
  await loggedIn('bob', { iceServers: [{ urls: ['turns:t:443?transport=tcp'], username: 'u', credential: 'c' }] });
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  await ui.handlers.accept();
  ws.sent.length = 0;
  ws.serverSend({ type: 'leave', name: 'alice', reason: 'no-path' });
  await flush();
  assert.match(ui.callStatus, /no network path to alice: the TURN relay could not be reached/i);
  assert.equal(ui.view, 'idle');
  assert.deepEqual(sent('leave'), []);
});

test('signaling lost: the call and its peer connection go on; the new socket resumes with the token, naming the call', async () => {
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'o' } });
  await ui.handlers.accept();
  const pc = last();
  pc.setConnected();
  ws.serverClose(1006);
  assert.equal(ui.view, 'connected');
  assert.equal(pc.closed, false);
  assert.match(ui.connection, /reconnecting to the server/i);
  assert.match(ui.callStatus, /in a call with alice/i, 'the call status is left alone');
  assert.equal(ui.signalingUp, false);
  await new Promise((ok) => setTimeout(ok, 20));
  const next = FakeWebSocket.instances.at(-1);
  assert.notEqual(next, ws);
  next.serverOpen();
  assert.deepEqual(next.sent, [{ type: 'login', name: 'bob', resume: true, presenceBatch: true, resumeToken: 'tok-1', call: 'alice' }]);
  next.serverSend({ type: 'login', success: true, name: 'bob', iceServers: [], users: ['alice'], resumeToken: 'tok-2', resumed: true });
  assert.equal(ui.view, 'connected');
  assert.equal(app.debugState.pc, pc);
  assert.equal(ui.connection, 'Connected');
  assert.equal(ui.page, 'call');
  assert.equal(store.load().token, 'tok-2', 'the new token replaces the old one');
});

test('resumed: false after a drop: the server lost the call, so it ends here too, and says why', async () => {
  ws.serverSend(offerFrom('alice'));
  await ui.handlers.accept();
  last().setConnected();
  ws.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 20));
  const next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  next.serverSend({ type: 'login', success: true, name: 'bob', iceServers: [], users: [], resumeToken: 'tok-2', resumed: false });
  assert.equal(ui.view, 'idle');
  assert.match(ui.callStatus, /no longer had the call with alice/);
  assert.equal(sent('leave').length + next.sent.filter((m) => m.type === 'leave').length, 0);
});

test('hanging up while the server is out of reach: the leave goes out once we are back', async () => {
  ws.serverSend(offerFrom('alice'));
  await ui.handlers.accept();
  last().setConnected();
  ws.serverClose(1006);
  ui.handlers.hangup();
  assert.equal(ui.view, 'idle');
  assert.equal(ui.callStatus, 'Call with alice ended.');
  await new Promise((ok) => setTimeout(ok, 20));
  const next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  assert.deepEqual(next.sent, [{ type: 'login', name: 'bob', resume: true, presenceBatch: true, resumeToken: 'tok-1' }], 'no call named: we left it');
  next.serverSend({ type: 'login', success: true, name: 'bob', iceServers: [], users: [], resumeToken: 'tok-2', resumed: true });
  assert.deepEqual(next.sent.at(-1), { type: 'leave', name: 'alice', reason: 'hangup' });
  assert.equal(ui.callStatus, 'Call with alice ended.', 'why the call ended stays up');
});

test('close 4000: the session moved elsewhere; no reconnect, the call ends here without a leave', async () => {
  ws.serverSend(offerFrom('alice'));
  await ui.handlers.accept();
  last().setConnected();
  const count = FakeWebSocket.instances.length;
  ws.serverClose(4000);
  assert.equal(ui.view, 'idle');
  assert.match(ui.callStatus, /moved to another tab or device/);
  assert.equal(ui.connection, 'Signed in elsewhere');
  assert.equal(store.load(), null, 'a reload of this tab will not take the session back');
  assert.equal(app.debugState.replaced, true);
  await new Promise((ok) => setTimeout(ok, 30));
  assert.equal(FakeWebSocket.instances.length, count, 'no reconnect');
  assert.equal(sent('leave').length, 0);
});

test('the resume is refused (invalid-token): back to the sign-in form, with the name filled in', async () => {
  ws.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 20));
  const next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  next.serverSend({ type: 'login', success: false, code: 'invalid-token', message: 'x' });
  assert.equal(ui.page, 'login');
  assert.equal(ui.loginName, 'bob');
  assert.match(ui.loginStatus, /could not sign in again as bob/i);
  assert.equal(store.load(), null);
});

test('glare: both call each other; the larger name gives way and answers', async () => {
  await ui.handlers.call('alice'); // we are bob > alice
  ws.serverSend({ type: 'offer', name: 'alice', offer: { type: 'offer', sdp: 'theirs' } });
  await settle();
  await settle();
  assert.deepEqual(sent('answer').map((m) => m.name), ['alice']);
  assert.equal(app.debugState.role, 'callee');
});

test('after a reconnect, name-taken (our old session not yet gone) is retried, not fatal', async () => {
  ws.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 20));
  const next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  next.serverSend({ type: 'login', success: false, code: 'name-taken', message: 'The name "bob" is already in use; choose another.' });
  assert.match(ui.connection, /already in use.*retrying/i);
  assert.equal(ui.page, 'call');
  await new Promise((ok) => setTimeout(ok, 600)); // first retry waits 250..500 ms
  const login = { type: 'login', name: 'bob', resume: true, presenceBatch: true, resumeToken: 'tok-1' };
  assert.deepEqual(next.sent, [login, login]);
  next.serverSend({ type: 'login', success: true, name: 'bob', iceServers: [], users: ['alice'] });
  assert.equal(ui.connection, 'Connected');
  assert.deepEqual(ui.users, ['alice']);
});

// ---- the attempt: what it started stops when it ends ------------------------

const offerFrom = (name, sdp = 'o') => ({ type: 'offer', name, offer: { type: 'offer', sdp } });

/** `name` rings us and we accept; returns the attempt's peer connection. */
async function acceptCallFrom(name) {
  ws.serverSend(offerFrom(name));
  await ui.handlers.accept();
  return last();
}

test('hanging up while our offer is still being made: the late offer is dropped, only the cancel goes out', async () => {
  ui.handlers.call('alice'); // not awaited: its remaining steps end with the attempt
  const pc = last();
  ui.handlers.hangup();
  await settle();
  assert.deepEqual(ws.sent, [{ type: 'leave', name: 'alice', reason: 'cancelled' }]);
  assert.equal(ui.callStatus, 'You cancelled the call to alice.');
  assert.equal(ui.view, 'idle');
  assert.equal(pc.closed, true);
});

test('the caller leaving while we make our answer: no answer and no leave of ours go out', async () => {
  ws.serverSend(offerFrom('alice'));
  ui.handlers.accept();
  ws.serverSend({ type: 'leave', name: 'alice', reason: 'cancelled' });
  await settle();
  assert.deepEqual(ws.sent, []);
  assert.equal(ui.callStatus, 'alice cancelled the call.');
  assert.equal(ui.view, 'idle');
});

test('glare closes our outgoing attempt before the answering one starts', async () => {
  await ui.handlers.call('alice');
  const ours = last();
  ws.serverSend(offerFrom('alice', 'theirs'));
  await settle();
  assert.equal(ours.closed, true);
  assert.notEqual(last(), ours);
  assert.deepEqual(last().remoteDescription, { type: 'offer', sdp: 'theirs' });
  assert.equal(ui.view, 'connecting');
});

test('ringing is shown only for the peer we are calling, while we are still calling', async () => {
  await ui.handlers.call('alice');
  ws.serverSend({ type: 'ringing', name: 'mallory' });
  assert.equal(ui.callStatus, 'Calling alice…');
  ws.serverSend({ type: 'ringing', name: 'alice' });
  assert.equal(ui.callStatus, 'Ringing alice…');
  ws.serverSend({ type: 'answer', name: 'alice', answer: { type: 'answer', sdp: 'a' } });
  ws.serverSend({ type: 'ringing', name: 'alice' });
  assert.equal(ui.callStatus, 'alice answered; connecting…');
});

test('ICE failing while we still ring is said once the peer answers', async () => {
  await ui.handlers.call('alice');
  last().setFailed();
  assert.equal(ui.callStatus, 'Calling alice…');
  ws.serverSend({ type: 'answer', name: 'alice', answer: { type: 'answer', sdp: 'a' } });
  await flush();
  assert.match(ui.callStatus, /no network path to alice/i);
});

test('answered but no media after 20 s: the attempt ends with the reason; an ended call says nothing more', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  await acceptCallFrom('alice');
  t.mock.timers.tick(19_999);
  assert.equal(ui.callStatus, 'Connecting to alice…');
  t.mock.timers.tick(1);
  await flush();
  assert.match(ui.callStatus, /no network path to alice/i);
  assert.equal(ui.view, 'idle');

  await acceptCallFrom('alice');
  ui.handlers.hangup();
  t.mock.timers.tick(60_000);
  assert.equal(ui.callStatus, 'Call with alice ended.');
});

test('media connected in time: the connect timeout stays quiet', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  (await acceptCallFrom('alice')).setConnected();
  t.mock.timers.tick(60_000);
  assert.equal(ui.callStatus, 'In a call with alice.');
});

test('in a call the timer and stats tick; once it ends they stop, and a late sample is dropped', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const pc = await acceptCallFrom('alice');
  pc.setConnected();
  assert.equal(ui.view, 'connected');
  assert.equal(ui.timer, '00:00');
  assert.equal(ui.stats, 'waiting for video…');
  pc.statsReply = Promise.resolve(new Map([['IT1', { id: 'IT1', type: 'inbound-rtp', kind: 'video', timestamp: 1, frameWidth: 640, frameHeight: 480 }]]));
  t.mock.timers.tick(1000);
  await settle();
  assert.equal(pc.statsRequests, 1);
  assert.equal(ui.stats, '640×480');
  assert.equal(app.debugState.lastStats.width, 640);

  let reply;
  pc.statsReply = new Promise((ok) => (reply = ok));
  t.mock.timers.tick(1000);
  assert.equal(pc.statsRequests, 2);
  ui.handlers.hangup();
  reply(new Map([['IT1', { id: 'IT1', type: 'inbound-rtp', kind: 'video', timestamp: 2, frameWidth: 1280, frameHeight: 720 }]]));
  await settle();
  assert.equal(ui.stats, null, 'the sample that came back after the hang-up is not shown');
  assert.equal(ui.timer, null);
  t.mock.timers.tick(10_000);
  assert.equal(pc.statsRequests, 2, 'no sampling after the call');
  assert.equal(ui.timer, null, 'the timer is not shown again');
});

test('Sign in pressed while the server is out of reach: the retries keep saying so', async () => {
  FakeWebSocket.instances = [];
  ui = fakeUi();
  app = new App({ signaling: new Signaling('ws://t/ws', { WebSocketImpl: FakeWebSocket, delay: () => 5 }), ui, openMedia: async () => ({ stream: null }), log: () => {} });
  app.start();
  FakeWebSocket.instances[0].serverOpen();
  FakeWebSocket.instances[0].serverClose(1006);
  ui.handlers.login('dave');
  assert.match(ui.loginStatus, /not connected/i);
  await new Promise((ok) => setTimeout(ok, 10));
  FakeWebSocket.instances.at(-1).serverClose(1006); // the retry fails too
  assert.match(ui.loginStatus, /not connected to the server yet; retrying/i);
  await new Promise((ok) => setTimeout(ok, 10));
  FakeWebSocket.instances.at(-1).serverOpen();
  assert.equal(ui.loginStatus, 'Reconnected to the server.');
  ui.handlers.login('dave');
  assert.deepEqual(FakeWebSocket.instances.at(-1).sent, [{ type: 'login', name: 'dave', resume: true, presenceBatch: true }]);
});

test('our latest token refused after a restart (the server had not written it yet): the one before is tried once', async () => {
  ws.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 20));
  let next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  next.serverSend({ type: 'login', success: true, name: 'bob', iceServers: [], users: [], resumeToken: 'tok-2', resumed: true });
  // Killed before it wrote tok-2 down; after the restart it knows tok-1 only.
  next.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 20));
  next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  next.serverSend({ type: 'login', success: false, code: 'invalid-token', message: 'x' });
  assert.deepEqual(next.sent.map((m) => m.resumeToken), ['tok-2', 'tok-1']);
  assert.equal(ui.page, 'call');
  next.serverSend({ type: 'login', success: true, name: 'bob', iceServers: [], users: [], resumeToken: 'tok-3', resumed: true });
  assert.equal(ui.page, 'call');
  assert.equal(store.load().token, 'tok-3');
  assert.equal(store.load().previousToken, 'tok-1');
  // Refused again: no endless retries; back to the sign-in form.
  next.serverClose(1006);
  await new Promise((ok) => setTimeout(ok, 20));
  next = FakeWebSocket.instances.at(-1);
  next.serverOpen();
  next.serverSend({ type: 'login', success: false, code: 'invalid-token', message: 'x' });
  next.serverSend({ type: 'login', success: false, code: 'invalid-token', message: 'x' });
  assert.deepEqual(next.sent.map((m) => m.resumeToken), ['tok-3', 'tok-1']);
  assert.equal(ui.page, 'login');
});
