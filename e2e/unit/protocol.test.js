import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkName,
  describeError,
  describeLeave,
  describeLoginFailure,
  endsCallAttempt,
  msg,
  pageOptions,
  parseMessage,
  presenceChanges,
  signalingUrl,
} from '../../web/js/protocol.js';

test('the WebSocket URL follows the page: scheme, host and port, path /ws', () => {
  assert.equal(signalingUrl({ protocol: 'http:', host: '192.168.1.5:9090' }), 'ws://192.168.1.5:9090/ws');
  assert.equal(signalingUrl({ protocol: 'https:', host: 'call.example.org' }), 'wss://call.example.org/ws');
  assert.equal(signalingUrl({ protocol: 'http:', host: '[::1]:8080' }), 'ws://[::1]:8080/ws');
});

test("an application's ?token= on the page URL goes on to the WebSocket", () => {
  assert.equal(
    signalingUrl({ protocol: 'https:', host: 'h', search: '?relay=1&token=a.b_c-d' }),
    'wss://h/ws?token=a.b_c-d',
  );
  assert.equal(signalingUrl({ protocol: 'https:', host: 'h', search: '?token=' }), 'wss://h/ws');
});

test('?relay=1 forces relay', () => {
  assert.deepEqual(pageOptions('?relay=1'), { relayOnly: true });
  assert.deepEqual(pageOptions(''), { relayOnly: false });
  assert.deepEqual(pageOptions('?relay=0'), { relayOnly: false });
});

test('names are trimmed and checked like the server does', () => {
  assert.deepEqual(checkName('  alice '), { ok: true, name: 'alice' });
  assert.equal(checkName('   ').ok, false);
  assert.equal(checkName('x'.repeat(64)).ok, true);
  assert.equal(checkName('x'.repeat(65)).ok, false);
  assert.equal(checkName('😀'.repeat(64)).ok, true, 'length counts characters, not UTF-16 units');
  assert.equal(checkName('a\u0007b').ok, false);
});

test('messages carry the fields of docs/protocol.md', () => {
  assert.deepEqual(msg.login('a'), { type: 'login', name: 'a', resume: true, presenceBatch: true });
  assert.deepEqual(msg.login('a', { resumeToken: 't', call: 'b' }), { type: 'login', name: 'a', resume: true, presenceBatch: true, resumeToken: 't', call: 'b' });
  assert.deepEqual(msg.login('a', { resumeToken: null, call: null }), { type: 'login', name: 'a', resume: true, presenceBatch: true });
  assert.deepEqual(msg.offer('b', { type: 'offer', sdp: 'x' }), { type: 'offer', name: 'b', offer: { type: 'offer', sdp: 'x' } });
  assert.deepEqual(msg.answer('b', { sdp: 'y' }), { type: 'answer', name: 'b', answer: { sdp: 'y' } });
  assert.deepEqual(msg.candidate('b', { candidate: 'c' }), { type: 'candidate', name: 'b', candidate: { candidate: 'c' } });
  assert.deepEqual(msg.leave('b'), { type: 'leave', name: 'b', reason: 'hangup' });
  assert.deepEqual(msg.leave('b', 'declined'), { type: 'leave', name: 'b', reason: 'declined' });
});

test('only JSON objects with a string type are messages', () => {
  assert.deepEqual(parseMessage('{"type":"leave"}'), { type: 'leave' });
  assert.equal(parseMessage('Hello world'), null, "the seed's greeting");
  assert.equal(parseMessage('[1,2]'), null);
  assert.equal(parseMessage('null'), null);
  assert.equal(parseMessage('{"name":"x"}'), null);
  assert.equal(parseMessage(42), null);
});

test('leave reasons are told in words, from the right point of view', () => {
  assert.equal(describeLeave({ reason: 'declined', peer: 'bob', role: 'caller', phase: 'ringing' }), 'bob declined the call.');
  assert.equal(describeLeave({ reason: 'cancelled', peer: 'alice', role: 'callee', phase: 'ringing' }), 'alice cancelled the call.');
  assert.match(describeLeave({ reason: 'no-answer', peer: 'bob', role: 'caller', phase: 'ringing' }), /no answer from bob/i);
  assert.match(describeLeave({ reason: 'no-answer', peer: 'alice', role: 'callee', phase: 'ringing' }), /missed call from alice.*no answer/i);
  assert.equal(describeLeave({ reason: 'hangup', peer: 'bob', role: 'caller', phase: 'connected' }), 'bob hung up.');
  assert.equal(describeLeave({ reason: undefined, peer: 'bob', role: 'callee', phase: 'connected' }), 'bob hung up.');
  assert.match(describeLeave({ reason: 'disconnected', peer: 'bob', role: 'caller', phase: 'connected' }), /bob disconnected/);
});

test('error codes are told in words', () => {
  assert.equal(describeError({ code: 'not-online', name: 'zed' }), 'zed is not online.');
  assert.equal(describeError({ code: 'busy', name: 'bob' }), 'bob is busy in another call.');
  assert.equal(describeError({ code: 'cannot-call-self' }), 'You cannot call yourself.');
  assert.equal(describeError({ code: 'something-new', message: 'Server says so' }), 'Server says so');
  assert.equal(describeError({}), 'Server error (unknown).');
  assert.match(describeLoginFailure({ code: 'name-taken', message: 'The name "a" is already in use' }), /already in use/);
  assert.match(describeLoginFailure({ code: 'name-taken' }), /already in use/);
  assert.match(describeLoginFailure({ code: 'unavailable' }), /try again/);
});

test('which errors end an outgoing call attempt', () => {
  assert.equal(endsCallAttempt({ code: 'busy', request: 'offer' }), true);
  assert.equal(endsCallAttempt({ code: 'not-online', request: 'offer' }), true);
  assert.equal(endsCallAttempt({ code: 'not-online' }), true);
  assert.equal(endsCallAttempt({ code: 'not-in-call', request: 'candidate' }), false);
  assert.equal(endsCallAttempt({ code: 'not-online', request: 'candidate' }), false);
  assert.equal(endsCallAttempt({ code: 'rate-limited' }), false);
});

test('callFromHash reads #call=NAME, decoded; callLink makes /call/NAME', async () => {
  const { callFromHash, callLink } = await import('../../web/js/protocol.js');
  assert.equal(callFromHash('#call=bob'), 'bob');
  assert.equal(callFromHash('#call=b%C3%B6b%20x'), 'böb x');
  assert.equal(callFromHash('#call='), null);
  assert.equal(callFromHash(''), null);
  assert.equal(callLink({ origin: 'https://duet.example' }, 'böb x'), 'https://duet.example/call/b%C3%B6b%20x');
});

test('presence and presence-batch read as [name, online] changes', () => {
  assert.deepEqual(presenceChanges({ type: 'presence', name: 'a', online: true }), [['a', true]]);
  assert.deepEqual(presenceChanges({ type: 'presence', name: 'a', online: false }), [['a', false]]);
  assert.deepEqual(presenceChanges({ type: 'presence-batch', online: ['a', 'b'], offline: ['c'] }), [
    ['a', true],
    ['b', true],
    ['c', false],
  ]);
  assert.deepEqual(presenceChanges({ type: 'presence-batch', online: 'a', offline: [7, 'c'] }), [['c', false]]);
  assert.deepEqual(presenceChanges({ type: 'presence', name: 3 }), []);
  assert.deepEqual(presenceChanges({ type: 'offer' }), []);
});
