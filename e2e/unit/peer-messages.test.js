// The messages peers send each other over the call's data channels (peer-link.js,
// file-transfer.js): what a peer's bad or unknown message turns into.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_CHAT_CHARS, MAX_CONTROL_BYTES, parseControl } from '../../web/js/peer-link.js';
import { parseFileMessage } from '../../web/js/file-transfer.js';
import { formatBytes, initials } from '../../web/js/dom.js';

test('control messages: state flags are booleans, chat text is bounded, the rest is dropped', () => {
  assert.deepEqual(parseControl('{"type":"state","micMuted":true,"cameraOff":"yes","video":true,"extra":1}'), {
    type: 'state',
    micMuted: true,
    cameraOff: false,
    audio: false,
    video: true,
    screen: false,
  });
  assert.deepEqual(parseControl('{"type":"chat","text":"hi <b>"}'), { type: 'chat', text: 'hi <b>' });
  assert.equal(parseControl(JSON.stringify({ type: 'chat', text: 'x'.repeat(MAX_CHAT_CHARS + 1) })), null);
  assert.equal(parseControl('{"type":"chat","text":""}'), null);
  assert.equal(parseControl('{"type":"chat","text":5}'), null);
  for (const bad of ['not json', '[]', 'null', '"state"', '{"type":"unknown"}', '{}']) assert.equal(parseControl(bad), null, bad);
  assert.equal(parseControl(new ArrayBuffer(4)), null);
  assert.equal(parseControl(`{"type":"chat","text":"${'a'.repeat(MAX_CONTROL_BYTES)}"}`), null);
});

test('file channel headers: sizes are safe integers, names bounded, ids required', () => {
  assert.deepEqual(parseFileMessage('{"type":"file","id":"ab","name":"a.txt","size":3,"mime":"text/plain"}'), {
    type: 'file',
    id: 'ab',
    name: 'a.txt',
    size: 3,
    mime: 'text/plain',
  });
  assert.equal(parseFileMessage('{"type":"file","id":"ab","name":"a","size":-1}'), null);
  assert.equal(parseFileMessage('{"type":"file","id":"ab","name":"a","size":1.5}'), null);
  assert.equal(parseFileMessage('{"type":"file","id":"ab","name":"a","size":1e300}'), null);
  assert.equal(parseFileMessage('{"type":"file","name":"a","size":1}'), null);
  assert.equal(parseFileMessage(JSON.stringify({ type: 'file', id: 'x', name: 'n'.repeat(1000), size: 1 })).name.length, 255);
  assert.equal(parseFileMessage('{"type":"file","id":"x","name":"","size":0}').name, 'file');
  for (const type of ['end', 'received', 'cancel']) assert.deepEqual(parseFileMessage(JSON.stringify({ type, id: 'x' })), { type, id: 'x' });
  assert.equal(parseFileMessage('{"type":"end"}'), null);
  assert.equal(parseFileMessage('{"type":"boom","id":"x"}'), null);
  assert.equal(parseFileMessage('garbage'), null);
});

test('initials and sizes for the page', () => {
  assert.equal(initials('alice'), 'AL');
  assert.equal(initials('Ana Lima'), 'AL');
  assert.equal(initials('bob.smith'), 'BS');
  assert.equal(initials('  '), '?');
  assert.equal(initials('😀x'), '😀X');
  assert.equal(formatBytes(999), '999 B');
  assert.equal(formatBytes(20 * 1024 * 1024), '21.0 MB');
});
