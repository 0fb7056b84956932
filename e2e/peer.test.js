// End-to-end: what a call carries peer to peer besides its media (web/js/peer-features.js):
// the other side's mute and camera state, chat, file transfer, device switching and
// screen sharing, over the call's own data channels. Real duet binary, real Chromium with
// fake devices (two cameras), one browser context per user; the tests run in order in one
// call between alice and bob.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  acceptIncoming,
  closeUser,
  dial,
  launchBrowser,
  login,
  openUser,
  screenshotPath,
  waitCallState,
  waitFirstFrame,
  waitFramesGrow,
  startFrameLog,
} from './lib/browser.js';
import { DuetServer } from './lib/server.js';

let server;
let browser;
let alice;
let bob;

before(async () => {
  server = await new DuetServer().start();
  // Two fake cameras, so a camera can be switched mid-call.
  browser = await launchBrowser({ args: ['--use-fake-device-for-media-stream=device-count=2'] });
  alice = await login(await openUser(browser, server.baseUrl), 'alice');
  bob = await login(await openUser(browser, server.baseUrl), 'bob');
});

after(async () => {
  for (const u of [alice, bob]) {
    if (u && process.env.E2E_VERBOSE) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
  }
  await closeUser(alice);
  await closeUser(bob);
  await browser?.close();
  await server?.stop();
});

/** Whether the element matching `selector` is shown (present and not [hidden] up the tree). */
function shown(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    return !!el && el.checkVisibility();
  }, selector);
}

test('the call opens its data channel, and bob sees alice mute and turn her camera off', async () => {
  await dial(alice.page, 'bob');
  await acceptIncoming(bob.page, 'alice');
  await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]);
  await Promise.all([waitCallState(alice.page, 'connected'), waitCallState(bob.page, 'connected')]);
  for (const u of [alice, bob]) {
    await u.page.waitForFunction(() => window.duet.features.linkOpen, null, { timeout: 15_000 });
  }
  // The channel is the call's own: the peer connection has the m=application section.
  const sdpHasData = await bob.page.evaluate(() => /^m=application /m.test(window.duet.state.pc.currentRemoteDescription.sdp));
  assert.equal(sdpHasData, true, "alice's offer carries no data channel section");
  await bob.page.waitForSelector('#peerState:not([hidden])');
  assert.equal(await shown(bob.page, '#peerMicOff'), false, 'mute indicator shown before alice muted');
  assert.equal(await shown(bob.page, '#peerCameraOff'), false, 'camera-off indicator shown before alice turned it off');

  await alice.page.click('#muteBtn');
  await bob.page.waitForFunction(() => document.querySelector('#peerMicOff').checkVisibility());
  assert.equal(await bob.page.textContent('#peerMicOff'), 'alice muted the microphone');
  assert.equal(await shown(bob.page, '#peerCameraOff'), false);

  await alice.page.click('#cameraBtn');
  await bob.page.waitForFunction(() => document.querySelector('#peerCameraOff').checkVisibility());
  assert.equal(await bob.page.textContent('#peerCameraOff'), 'alice turned the camera off');
  // Initials instead of a black picture.
  assert.equal(await shown(bob.page, '#peerAvatar'), true, 'no avatar over the black video');
  assert.equal((await bob.page.textContent('#peerAvatar .peer-initials')).trim(), 'AL');
  await bob.page.screenshot({ path: screenshotPath('peer-camera-off-bob.png') });

  await alice.page.click('#muteBtn');
  await alice.page.click('#cameraBtn');
  await bob.page.waitForFunction(
    () => !document.querySelector('#peerMicOff').checkVisibility() && !document.querySelector('#peerCameraOff').checkVisibility(),
  );
  assert.equal(await shown(bob.page, '#peerAvatar'), false, 'avatar still over the video after the camera came back');
  // Alice sees nothing of the kind about bob, who changed nothing.
  assert.equal(await shown(alice.page, '#peerMicOff'), false);
  assert.equal(await shown(alice.page, '#peerCameraOff'), false);
});

test('chat messages arrive both ways, with an unread count while the chat is closed', async () => {
  await alice.page.click('#chatBtn');
  await alice.page.waitForSelector('#chatInput:not([disabled])');
  assert.equal(await alice.page.getAttribute('#chatBtn', 'aria-expanded'), 'true');
  await alice.page.fill('#chatInput', 'hello bob, can you hear me?');
  await alice.page.press('#chatInput', 'Enter');
  // Bob's chat is closed: the message waits behind an unread count.
  await bob.page.waitForSelector('#chatUnread:not([hidden])');
  assert.equal(await bob.page.textContent('#chatUnread'), '1');
  assert.equal(await bob.page.getAttribute('#chatBtn', 'aria-label'), 'Chat, 1 unread');
  await bob.page.click('#chatBtn');
  await bob.page.waitForSelector('#chatUnread', { state: 'hidden' });
  assert.equal(await bob.page.getAttribute('#chatBtn', 'aria-label'), 'Chat');
  assert.equal(await bob.page.textContent('#chatLog .chat-them .chat-text'), 'hello bob, can you hear me?');
  assert.equal(await bob.page.textContent('#chatLog .chat-them .chat-who'), 'alice');

  // Text, not markup: it is shown as typed.
  await bob.page.fill('#chatInput', 'yes <b>loud</b> & clear');
  await bob.page.click('#chatSendBtn');
  await alice.page.waitForSelector('#chatLog .chat-them');
  assert.equal(await alice.page.textContent('#chatLog .chat-them .chat-text'), 'yes <b>loud</b> & clear');
  assert.equal(await alice.page.$('#chatLog b'), null);
  // Alice has the chat open: nothing unread.
  assert.equal(await shown(alice.page, '#chatUnread'), false);
  assert.equal(await bob.page.inputValue('#chatInput'), '', 'the sent message stayed in the input');
  assert.equal(await alice.page.locator('#chatLog .chat-me').count(), 1);
  await bob.page.screenshot({ path: screenshotPath('peer-chat-bob.png') });
});
