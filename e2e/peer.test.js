// End-to-end: what a call carries peer to peer besides its media (web/js/peer-features.js):
// the other side's mute and camera state, chat, file transfer, device switching and
// screen sharing, over the call's own data channels. Real duet binary, real Chromium with
// fake devices (two cameras), one browser context per user; the tests run in order in one
// call between alice and bob.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
/** Files to pick in the pages' file inputs (a path: Chromium reads it itself). */
const filesDir = mkdtempSync(join(tmpdir(), 'duet-peer-'));

function fileOf(name, content) {
  const path = join(filesDir, name);
  writeFileSync(path, content);
  return path;
}

before(async () => {
  server = await new DuetServer().start();
  // Three fake cameras, so a camera can be switched mid-call. Chromium's second fake
  // camera (fake_device_1) is a depth camera (Y16 frames) that shows in a <video> but that
  // WebRTC does not send (measured: framesSent stays put after replaceTrack); the third
  // (fake_device_2, MJPEG) is sent like the first.
  browser = await launchBrowser({ args: ['--use-fake-device-for-media-stream=device-count=3'] });
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
  rmSync(filesDir, { recursive: true, force: true });
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

/** Record every value the page's file progress bars take (a MutationObserver, in the page). */
function recordProgress(page) {
  return page.evaluate(() => {
    window.__progress = [];
    const seen = (bar) => {
      const values = window.__progress;
      if (values[values.length - 1] !== bar.value) values.push(bar.value);
    };
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.target instanceof HTMLProgressElement) seen(r.target);
        for (const n of r.addedNodes ?? []) for (const bar of n.querySelectorAll?.('progress') ?? []) seen(bar);
      }
    }).observe(document.querySelector('#callPanel'), { subtree: true, childList: true, attributes: true, attributeFilter: ['value'] });
  });
}

test('a 20 MB file goes from alice to bob intact, with the progress bar moving on both sides', async () => {
  const size = 20 * 1024 * 1024;
  const content = randomBytes(size);
  const want = createHash('sha256').update(content).digest('hex');
  await recordProgress(alice.page);
  await recordProgress(bob.page);
  const t0 = Date.now();
  await alice.page.setInputFiles('#fileInput', fileOf('holiday.bin', content));
  await bob.page.waitForSelector('#fileList .file-in a[download]', { timeout: 120_000 });
  const ms = Date.now() - t0;
  const got = await bob.page.evaluate(async () => {
    const a = document.querySelector('#fileList .file-in a[download]');
    const bytes = await (await fetch(a.href)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return { name: a.getAttribute('download'), size: bytes.byteLength, sha256: [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('') };
  });
  assert.deepEqual(got, { name: 'holiday.bin', size, sha256: want });
  await alice.page.waitForFunction(() => /Sent to bob/.test(document.querySelector('#fileList .file-out .file-status')?.textContent ?? ''));
  for (const u of [alice, bob]) {
    const values = await u.page.evaluate(() => window.__progress);
    const distinct = new Set(values);
    assert.ok(distinct.size >= 5, `${u.name}'s progress bar took only ${distinct.size} values: ${values.join(', ')}`);
    assert.equal(Math.max(...values), size, `${u.name}'s progress bar did not reach the end`);
    const rising = values.every((v, i) => i === 0 || v >= values[i - 1]);
    assert.ok(rising, `${u.name}'s progress went backwards: ${values.join(', ')}`);
  }
  console.log(`TIMING file 20 MiB alice -> bob over the data channel: ${ms} ms (${((size / 1e6) / (ms / 1000)).toFixed(1)} MB/s)`);
  await bob.page.screenshot({ path: screenshotPath('peer-file-bob.png') });
});

test('the receiver cancels a file mid-way: both sides say so and no download is offered', async () => {
  const size = 20 * 1024 * 1024;
  // Alice cancels as soon as her bar first moves (in the page, so no race with the end).
  await alice.page.evaluate(() => {
    const list = document.querySelector('#fileList');
    const before = list.querySelectorAll('.file-in').length;
    const observer = new MutationObserver(() => {
      const rows = list.querySelectorAll('.file-in');
      if (rows.length <= before) return;
      const row = rows[rows.length - 1];
      if (row.querySelector('progress').value > 0) {
        observer.disconnect();
        row.querySelector('.file-cancel').click();
      }
    });
    observer.observe(list, { subtree: true, childList: true, attributes: true, attributeFilter: ['value'] });
  });
  await bob.page.setInputFiles('#fileInput', fileOf('too-big.bin', randomBytes(size)));
  await bob.page.waitForFunction(() => /alice cancelled it/.test(document.querySelector('#fileList .file-out .file-status')?.textContent ?? ''), null, { timeout: 60_000 });
  const aliceRow = await alice.page.evaluate(() => {
    const rows = document.querySelectorAll('#fileList .file-in');
    const row = rows[rows.length - 1];
    return { status: row.querySelector('.file-status').textContent, link: !!row.querySelector('a'), cancel: !!row.querySelector('.file-cancel') };
  });
  assert.deepEqual(aliceRow, { status: 'You cancelled it.', link: false, cancel: false });
  assert.equal(await bob.page.locator('#fileList .file-out .file-cancel').count(), 0);
});

/** The track the page's peer connection sends for `kind`: {id, label}, or null. */
function sentTrack(page, kind) {
  return page.evaluate((k) => {
    const t = window.duet.state.pc?.getSenders().find((s) => s.track?.kind === k)?.track;
    return t ? { id: t.id, label: t.label, live: t.readyState === 'live' } : null;
  }, kind);
}

/** The remote <video>'s picture size on the page. */
function remoteSize(page) {
  return page.evaluate(() => {
    const v = document.querySelector('#remoteVideo');
    return { w: v.videoWidth, h: v.videoHeight };
  });
}

test('alice switches camera and microphone mid-call: the sent tracks change and bob keeps decoding', async () => {
  await startFrameLog(bob.page);
  // Media flows before the switch.
  await waitFramesGrow(bob.page, { frames: 15 });
  await alice.page.click('#devicesBtn');
  await alice.page.waitForFunction(() => document.querySelectorAll('#cameraSelect option').length === 3);
  const before = await sentTrack(alice.page, 'video');
  assert.equal(before.label, 'fake_device_0');
  const other = await alice.page.evaluate(() => [...document.querySelectorAll('#cameraSelect option')].find((o) => o.textContent === 'fake_device_2').value);
  const switchedAt = Date.now();
  await alice.page.selectOption('#cameraSelect', other);
  await alice.page.waitForFunction(() => window.duet.state.pc.getSenders().some((s) => s.track?.label === 'fake_device_2'));
  const after = await sentTrack(alice.page, 'video');
  assert.notEqual(after.id, before.id, 'the sender still has the old track');
  assert.equal(after.live, true);
  // The self-view and the toggles use the new track too; the old one is stopped.
  const local = await alice.page.evaluate(() => window.duet.state.localStream.getVideoTracks().map((t) => t.label));
  assert.deepEqual(local, ['fake_device_2']);
  await waitFramesGrow(bob.page, { sinceMs: switchedAt, frames: 15 });
  assert.match(await alice.page.textContent('#deviceStatus'), /Camera: fake_device_2/);

  const mic = await sentTrack(alice.page, 'audio');
  const otherMic = await alice.page.evaluate(() => [...document.querySelectorAll('#micSelect option')].find((o) => !o.selected).value);
  await alice.page.selectOption('#micSelect', otherMic);
  await alice.page.waitForFunction((id) => {
    const t = window.duet.state.pc.getSenders().find((s) => s.track?.kind === 'audio')?.track;
    return t && t.id !== id && t.readyState === 'live';
  }, mic.id);

  // Bob's speaker: the remote video plays on the output he picks.
  await bob.page.click('#devicesBtn');
  await bob.page.waitForFunction(() => document.querySelectorAll('#speakerSelect option').length > 1);
  const speaker = await bob.page.evaluate(() => [...document.querySelectorAll('#speakerSelect option')].find((o) => !o.selected).value);
  await bob.page.selectOption('#speakerSelect', speaker);
  await bob.page.waitForFunction((id) => document.querySelector('#remoteVideo').sinkId === id, speaker);
  await alice.page.click('#devicesBtn');
  await bob.page.click('#devicesBtn');
});

test('alice shares her screen: the sent track changes, bob decodes it (16:9) and sees it named, then the camera comes back', async () => {
  const camera = await sentTrack(alice.page, 'video');
  const cameraSize = await remoteSize(bob.page);
  assert.ok(Math.abs(cameraSize.w / cameraSize.h - 4 / 3) < 0.05, `camera picture is ${cameraSize.w}x${cameraSize.h}`);
  const sharedAt = Date.now();
  await alice.page.click('#screenBtn');
  await alice.page.waitForFunction(() => window.duet.features.sharingScreen);
  const screen = await sentTrack(alice.page, 'video');
  assert.notEqual(screen.id, camera.id);
  assert.match(screen.label, /^screen/);
  assert.equal(await alice.page.getAttribute('#screenBtn', 'aria-pressed'), 'true');
  assert.equal(await alice.page.getAttribute('#screenBtn', 'aria-label'), 'Stop sharing the screen');
  await bob.page.waitForFunction(() => {
    const v = document.querySelector('#remoteVideo');
    return v.videoHeight > 0 && Math.abs(v.videoWidth / v.videoHeight - 16 / 9) < 0.05;
  }, null, { timeout: 20_000 });
  await waitFramesGrow(bob.page, { sinceMs: sharedAt, frames: 15 });
  await bob.page.waitForFunction(() => document.querySelector('#peerScreen').checkVisibility());
  assert.equal(await bob.page.textContent('#peerScreen'), 'alice is sharing the screen');
  console.log(`TIMING screen share: bob's picture 16:9 after ${Date.now() - sharedAt} ms (${JSON.stringify(await remoteSize(bob.page))})`);
  await bob.page.screenshot({ path: screenshotPath('peer-screen-bob.png') });

  const stoppedAt = Date.now();
  await alice.page.click('#screenBtn');
  await alice.page.waitForFunction(() => !window.duet.features.sharingScreen);
  assert.equal((await sentTrack(alice.page, 'video')).id, camera.id, 'the camera did not come back on the sender');
  await bob.page.waitForFunction(() => {
    const v = document.querySelector('#remoteVideo');
    return v.videoHeight > 0 && Math.abs(v.videoWidth / v.videoHeight - 4 / 3) < 0.05;
  }, null, { timeout: 20_000 });
  await waitFramesGrow(bob.page, { sinceMs: stoppedAt, frames: 15 });
  await bob.page.waitForFunction(() => !document.querySelector('#peerScreen').checkVisibility());
});

test('camera and microphone refused, then allowed: "Try again" in the lobby brings them back without a reload', async () => {
  // A browser that asks for permission (no auto-accept): refused until the context grants it.
  const asking = await launchBrowser({ askForMedia: true, args: ['--use-fake-device-for-media-stream=device-count=3'] });
  let carol;
  try {
    carol = await login(await openUser(asking, server.baseUrl), 'carol', { expectMedia: false });
    await carol.page.waitForFunction(() => /permission denied/i.test(document.querySelector('#callStatus').textContent), null, { timeout: 15_000 });
    assert.equal(await carol.page.evaluate(() => window.duet.state.localStream), null);
    // In the lobby (the Devices panel is in the call view).
    await carol.page.waitForSelector('#lobbyMediaRetryBtn:not([hidden])');
    await carol.context.grantPermissions(['camera', 'microphone'], { origin: server.baseUrl });
    await carol.page.click('#lobbyMediaRetryBtn');
    await carol.page.waitForFunction(() => {
      const v = document.querySelector('#localVideo');
      return v.srcObject && v.videoWidth > 0;
    });
    assert.equal(await carol.page.textContent('#deviceStatus'), 'Camera and microphone are on.');
    assert.equal(await carol.page.isHidden('#mediaRetryBtn'), true);
    assert.equal(await carol.page.isHidden('#lobbyMediaRetryBtn'), true);
    const tracks = await carol.page.evaluate(() => window.duet.state.localStream.getTracks().map((t) => t.kind).sort());
    assert.deepEqual(tracks, ['audio', 'video']);
  } finally {
    await closeUser(carol);
    await asking.close();
  }
});

test('bob reloads mid-call: the re-joined connection has new channels, alice\'s state and chat come back', async () => {
  await alice.page.click('#muteBtn');
  await bob.page.waitForFunction(() => document.querySelector('#peerMicOff')?.checkVisibility());
  const rejoinsBefore = await alice.page.evaluate(() => window.duet.state.rejoins);
  await bob.page.reload();
  await waitCallState(bob.page, 'connected', 30_000);
  await alice.page.waitForFunction((n) => window.duet.state.rejoins > n, rejoinsBefore, { timeout: 30_000 });
  for (const u of [alice, bob]) {
    await u.page.waitForFunction(() => window.duet.features.linkOpen, null, { timeout: 20_000 });
  }
  // The state is sent again on the new channel: bob's fresh page knows alice is muted.
  await bob.page.waitForFunction(() => document.querySelector('#peerMicOff')?.checkVisibility());
  await bob.page.click('#chatBtn');
  await bob.page.fill('#chatInput', 'back again');
  await bob.page.press('#chatInput', 'Enter');
  await alice.page.waitForFunction(() => [...document.querySelectorAll('#chatLog .chat-them .chat-text')].some((e) => e.textContent === 'back again'));
  await alice.page.click('#muteBtn');
  await bob.page.waitForFunction(() => !document.querySelector('#peerMicOff').checkVisibility());
});
