// End-to-end: real duet binary, real Chromium (fake camera), one browser
// context per user. The tests in this file run in order and share the users.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { DuetServer } from './lib/server.js';
import {
  acceptIncoming,
  assertRemoteVideoPlays,
  closeUser,
  dial,
  inboundAudioEnergy,
  inboundVideo,
  launchBrowser,
  login,
  openUser,
  remoteBrightness,
  screenshotPath,
  sentTracks,
  state,
  statusText,
  waitCallState,
  waitFirstFrame,
  waitStatus,
} from './lib/browser.js';

const RING_TIMEOUT_S = 2;
/** A closed tab's name is held this long for a resume (resume.test.js) before it counts as gone. */
const RESUME_WINDOW_S = 2;

let server;
let browser;
let alice;
let bob;
let carol;

before(async () => {
  server = await new DuetServer({ args: ['--ring-timeout', `${RING_TIMEOUT_S}s`, '--resume-window', `${RESUME_WINDOW_S}s`] }).start();
  browser = await launchBrowser();
});

after(async () => {
  for (const u of [alice, bob, carol]) {
    if (u && process.env.E2E_VERBOSE) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
  }
  await browser?.close();
  await server?.stop();
});

/** Both sides idle again: no peer connection, no remote video, own camera still on. */
async function assertIdle(user) {
  await waitCallState(user.page, 'idle');
  const s = await state(user.page);
  assert.equal(s.hasPc, false, `${user.name} still has a peer connection`);
  const video = await user.page.evaluate(() => {
    const remote = document.querySelector('#remoteVideo');
    const local = document.querySelector('#localVideo');
    return { remote: remote.srcObject, localLive: !!local.srcObject && local.videoWidth > 0 && !local.paused };
  });
  assert.equal(video.remote, null, `${user.name}'s remote video was not cleared`);
  assert.equal(video.localLive, true, `${user.name}'s own camera is no longer shown`);
  assert.equal(await user.page.isEnabled('#callBtn'), true, `${user.name} cannot call again`);
}

/** Call from `caller` to `callee`, accept, wait for media both ways. Returns ms to first frame. */
async function connect(caller, callee, { viaList = false } = {}) {
  const t0 = Date.now();
  if (viaList) {
    await caller.page.click(`#userList button[data-name="${callee.name}"]`);
  } else {
    await dial(caller.page, callee.name);
  }
  await acceptIncoming(callee.page, caller.name);
  const [a, b] = await Promise.all([waitFirstFrame(caller.page), waitFirstFrame(callee.page)]);
  await Promise.all([waitCallState(caller.page, 'connected'), waitCallState(callee.page, 'connected')]);
  return { callerMs: a - t0, calleeMs: b - t0 };
}

test('two users log in and see each other online', async () => {
  alice = await login(await openUser(browser, server.baseUrl), 'alice');
  bob = await login(await openUser(browser, server.baseUrl), 'bob');
  // bob got alice in his login reply; alice got bob by a presence update.
  await bob.page.waitForSelector('#userList button[data-name="alice"]');
  await alice.page.waitForSelector('#userList button[data-name="bob"]');
  assert.match(await alice.page.textContent('#whoami'), /alice/);
});

test('call and accept: video plays on both sides and frames are decoded', async (t) => {
  const timing = await connect(alice, bob);
  t.diagnostic(`Call -> first decoded remote frame: caller ${timing.callerMs} ms, callee ${timing.calleeMs} ms`);
  console.log(`TIMING call->first-frame caller=${timing.callerMs}ms callee=${timing.calleeMs}ms`);
  writeFileSync(screenshotPath('timing.json'), JSON.stringify(timing, null, 2));

  for (const user of [alice, bob]) {
    const v = await assertRemoteVideoPlays(user.page);
    assert.ok(v.w > 0 && v.h > 0, `${user.name}: remote video has no size`);
    const s1 = await inboundVideo(user.page);
    await sleep(700);
    const s2 = await inboundVideo(user.page);
    assert.ok(s2.framesDecoded > s1.framesDecoded, `${user.name}: framesDecoded did not grow (${s1.framesDecoded} -> ${s2.framesDecoded})`);
  }
  const a = await state(alice.page);
  const b = await state(bob.page);
  assert.equal(a.peer, 'bob');
  assert.equal(b.peer, 'alice');
  await waitStatus(alice.page, /in a call with bob/);
  await waitStatus(bob.page, /in a call with alice/);
  // Timer and stats line are shown while connected.
  await alice.page.waitForSelector('#callTimer:not([hidden])');
  await alice.page.waitForFunction(() => /\d+×\d+/.test(document.querySelector('#stats').textContent), null, { timeout: 5000 });
  await sleep(1200); // let the timer tick and the stats get a bitrate
  await alice.page.screenshot({ path: screenshotPath('call-alice.png') });
  await bob.page.screenshot({ path: screenshotPath('call-bob.png') });
  await bob.page.setViewportSize({ width: 390, height: 844 });
  await bob.page.screenshot({ path: screenshotPath('call-bob-phone.png'), fullPage: true });
  await bob.page.setViewportSize({ width: 1000, height: 900 });
});

test('mute and camera toggles change the sent tracks', async () => {
  const { page } = alice;
  assert.deepEqual(await sentTracks(page), { audio: true, video: true });
  const energyBefore = await inboundAudioEnergy(bob.page);
  await sleep(1500);
  const energyAfter = await inboundAudioEnergy(bob.page);
  assert.ok(energyAfter > energyBefore, 'bob hears nothing from alice before muting');
  assert.ok((await remoteBrightness(bob.page)) > 20, 'bob sees a dark picture before camera off');

  await page.click('#muteBtn');
  assert.equal(await page.getAttribute('#muteBtn', 'aria-pressed'), 'true');
  assert.equal((await page.textContent('#muteBtn')).trim(), 'Mute', 'the mute toggle keeps its label');
  assert.deepEqual(await sentTracks(page), { audio: false, video: true });
  await sleep(500);
  const mutedA = await inboundAudioEnergy(bob.page);
  await sleep(1500);
  const mutedB = await inboundAudioEnergy(bob.page);
  assert.ok(mutedB - mutedA < 1e-4, `bob still hears alice while muted (${mutedB - mutedA})`);

  await page.click('#cameraBtn');
  assert.equal(await page.getAttribute('#cameraBtn', 'aria-pressed'), 'true');
  assert.equal((await page.textContent('#cameraBtn')).trim(), 'Camera off', 'the camera toggle keeps its label');
  assert.deepEqual(await sentTracks(page), { audio: false, video: false });
  await bob.page.waitForFunction(
    () => {
      const v = document.querySelector('#remoteVideo');
      const c = document.createElement('canvas');
      c.width = 32;
      c.height = 24;
      const g = c.getContext('2d');
      g.drawImage(v, 0, 0, 32, 24);
      const d = g.getImageData(0, 0, 32, 24).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
      return sum / (d.length / 4) / 3 < 5;
    },
    null,
    { timeout: 5000 },
  );

  await page.click('#muteBtn');
  await page.click('#cameraBtn');
  assert.equal(await page.getAttribute('#muteBtn', 'aria-pressed'), 'false');
  assert.equal(await page.getAttribute('#cameraBtn', 'aria-pressed'), 'false');
  assert.deepEqual(await sentTracks(page), { audio: true, video: true });
  await bob.page.waitForFunction(
    () => {
      const v = document.querySelector('#remoteVideo');
      const c = document.createElement('canvas');
      c.width = 32;
      c.height = 24;
      const g = c.getContext('2d');
      g.drawImage(v, 0, 0, 32, 24);
      const d = g.getImageData(0, 0, 32, 24).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
      return sum / (d.length / 4) / 3 > 20;
    },
    null,
    { timeout: 5000 },
  );
});

test('the callee hangs up: both sides return to ready', async () => {
  await bob.page.click('#hangUpBtn');
  await assertIdle(bob);
  await assertIdle(alice);
  await waitStatus(alice.page, /bob hung up/);
  await waitStatus(bob.page, /ended/);
  await alice.page.waitForSelector('#callTimer', { state: 'hidden' });
});

test('a second call between the same two works (started from the user list)', async (t) => {
  const timing = await connect(bob, alice, { viaList: true });
  t.diagnostic(`second call -> first frame: caller ${timing.callerMs} ms, callee ${timing.calleeMs} ms`);
  await assertRemoteVideoPlays(alice.page);
  await assertRemoteVideoPlays(bob.page);
  await alice.page.click('#hangUpBtn');
  await assertIdle(alice);
  await assertIdle(bob);
  await waitStatus(bob.page, /alice hung up/);
});

test('decline: the caller is told', async () => {
  await dial(alice.page, 'bob');
  await bob.page.waitForSelector('#incomingPanel:not([hidden])');
  assert.equal(await bob.page.textContent('#incomingText'), 'alice is calling');
  // The server confirms the callee has the offer: the caller sees it ringing.
  await waitStatus(alice.page, /ringing bob/);
  await bob.page.screenshot({ path: screenshotPath('incoming-bob.png') });
  await bob.page.click('#declineBtn');
  await waitStatus(alice.page, /bob declined/);
  await waitStatus(bob.page, /you declined/);
  await assertIdle(alice);
  await assertIdle(bob);
});

test('cancel while ringing: the callee is told', async () => {
  await dial(alice.page, 'bob');
  await bob.page.waitForSelector('#incomingPanel:not([hidden])');
  assert.equal((await alice.page.textContent('#hangUpBtn')).trim(), 'Cancel');
  await alice.page.click('#hangUpBtn');
  await waitStatus(bob.page, /alice cancelled/);
  await bob.page.waitForSelector('#incomingPanel', { state: 'hidden' });
  await assertIdle(alice);
  await assertIdle(bob);
});

test(`no answer: the server ends the call after --ring-timeout ${RING_TIMEOUT_S}s`, async () => {
  const t0 = Date.now();
  await dial(alice.page, 'bob');
  await bob.page.waitForSelector('#incomingPanel:not([hidden])');
  await waitStatus(alice.page, /no answer/, 10_000);
  await waitStatus(bob.page, /no answer/, 10_000);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= RING_TIMEOUT_S * 1000 - 200, `ended too early (${elapsed} ms)`);
  await bob.page.waitForSelector('#incomingPanel', { state: 'hidden' });
  await assertIdle(alice);
  await assertIdle(bob);
});

test('busy: a third user calling someone in a call is told', async () => {
  carol = await login(await openUser(browser, server.baseUrl), 'carol');
  await connect(alice, bob);
  await dial(carol.page, 'alice');
  await waitStatus(carol.page, /alice is busy/);
  await assertIdle(carol);
  // The call in progress is untouched.
  assert.equal((await state(alice.page)).call, 'connected');
  assert.equal((await state(bob.page)).call, 'connected');
  await alice.page.click('#hangUpBtn');
  await assertIdle(alice);
  await assertIdle(bob);
});

test('calling an offline name or yourself says why', async () => {
  await dial(alice.page, 'nobody');
  await waitStatus(alice.page, /nobody is not online/);
  await assertIdle(alice);
  await dial(alice.page, 'alice');
  await waitStatus(alice.page, /cannot call yourself/);
  await assertIdle(alice);
});

test(`presence: a user who leaves disappears from the list (after --resume-window ${RESUME_WINDOW_S}s)`, async () => {
  await alice.page.waitForSelector('#userList button[data-name="carol"]');
  await closeUser(carol);
  carol = null;
  await alice.page.waitForSelector('#userList button[data-name="carol"]', { state: 'detached' });
});

test('duplicate login is refused in the page', async () => {
  const dup = await openUser(browser, server.baseUrl);
  try {
    await dup.page.waitForFunction(() => window.duet?.state.signaling === 'open');
    await dup.page.fill('#usernameInput', 'alice');
    await dup.page.click('#loginBtn');
    await dup.page.waitForFunction(() => /in use|taken/i.test(document.querySelector('#loginStatus').textContent));
    assert.equal(await dup.page.isVisible('#loginStatus'), true);
    await dup.page.screenshot({ path: screenshotPath('login-name-taken.png') });
    assert.equal(await dup.page.isHidden('#callPage'), true);
    assert.ok(!dup.consoleLines.some((l) => l.startsWith('dialog:')), 'an alert() was shown');
    // A blank name is refused before it reaches the server.
    await dup.page.fill('#usernameInput', '   ');
    await dup.page.click('#loginBtn');
    await dup.page.waitForFunction(() => /type a name/i.test(document.querySelector('#loginStatus').textContent));
  } finally {
    await closeUser(dup);
  }
});

test('no camera or microphone: the user can still join and receive video', async () => {
  const dave = await login(await openUser(browser, server.baseUrl, { noMedia: true }), 'dave', { expectMedia: false });
  try {
    await waitStatus(dave.page, /unavailable|no device/);
    const t0 = Date.now();
    await dial(dave.page, 'alice');
    await acceptIncoming(alice.page, 'dave');
    await waitFirstFrame(dave.page);
    await assertRemoteVideoPlays(dave.page);
    await waitCallState(alice.page, 'connected');
    const s = await statusText(dave.page);
    assert.ok(Date.now() - t0 < 20_000, s);
    // dave sends nothing; alice's remote video gets no frames.
    assert.deepEqual(await sentTracks(dave.page), {});
    await dave.page.click('#hangUpBtn');
    await assertIdle(alice);
    await waitCallState(dave.page, 'idle');

    // And as the callee: the answer is receive-only.
    await dial(alice.page, 'dave');
    await acceptIncoming(dave.page, 'alice');
    await waitFirstFrame(dave.page);
    await assertRemoteVideoPlays(dave.page);
    await waitCallState(alice.page, 'connected');
    assert.deepEqual(await sentTracks(dave.page), {});
    await alice.page.click('#hangUpBtn');
    await assertIdle(alice);
    await waitCallState(dave.page, 'idle');
  } finally {
    await closeUser(dave);
  }
});

test('?relay=1 with no TURN server: the page says there is no network path and no TURN server', async () => {
  // The server here offers no STUN/TURN, so relay-only ICE has no candidate at all.
  const erin = await login(await openUser(browser, server.baseUrl, { query: '?relay=1' }), 'erin');
  try {
    await dial(erin.page, 'bob');
    // Read while it rings: once answered, the attempt ends as soon as ICE has failed.
    const policy = await erin.page.evaluate(() => window.duet.state.pc.getConfiguration().iceTransportPolicy);
    assert.equal(policy, 'relay');
    await acceptIncoming(bob.page, 'erin');
    await waitStatus(erin.page, /no network path to bob.*no TURN relay configured/, 10_000);
    // The attempt is over on both sides: erin ended it, bob was told.
    await assertIdle(erin);
    await assertIdle(bob);
  } finally {
    await closeUser(erin);
  }
});

test('the peer closes its tab mid-call: the other side is told and is ready again', async () => {
  const frank = await login(await openUser(browser, server.baseUrl), 'frank');
  await connect(frank, alice);
  await closeUser(frank);
  // Held first for a resume (a reload would come back), then gone.
  await waitStatus(alice.page, /frank is reconnecting/);
  await waitStatus(alice.page, /frank disconnected/);
  await assertIdle(alice);
  await alice.page.waitForSelector('#userList button[data-name="frank"]', { state: 'detached' });
});

test('no page threw an uncaught error or used alert()', () => {
  for (const u of [alice, bob]) {
    const bad = u.consoleLines.filter((l) => l.startsWith('pageerror:') || l.startsWith('dialog:'));
    assert.deepEqual(bad, [], `${u.name}'s page`);
  }
});
