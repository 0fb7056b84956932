// Firefox <-> Chromium: Debian's firefox-esr (through geckodriver, lib/firefox.js) with
// Firefox's fake camera and microphone calls Debian's chromium and is called by it, on
// the real duet binary. Firefox has its own WebRTC stack (its own ICE, SDP and codecs),
// so this is the test that the client and the server do not lean on Chromium's ways.
// Media must be decoded on both sides, both directions. The tests run in order and
// share the two users.

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
  state,
  waitCallState,
  waitFirstFrame,
  waitStatus,
} from './lib/browser.js';
import { closeFirefoxUser, geckodriverVersion, openFirefoxUser } from './lib/firefox.js';

let server;
let browser;
/** The user in Firefox. */
let fox;
/** The user in Chromium. */
let chrome;
const timings = {};

before(async () => {
  server = await new DuetServer().start();
  browser = await launchBrowser();
});

after(async () => {
  for (const u of [fox, chrome]) {
    if (u && process.env.E2E_VERBOSE) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
  }
  await closeFirefoxUser(fox);
  await closeUser(chrome);
  await browser?.close();
  await server?.stop();
});

/** Received audio of the page's call: packets and, where the browser counts it, samples. */
function inboundAudio(page) {
  return page.evaluate(async () => {
    const pc = window.duet.state.pc;
    if (!pc) return null;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        return { packets: s.packetsReceived ?? 0, samples: s.totalSamplesReceived ?? 0 };
      }
    }
    return { packets: 0, samples: 0 };
  });
}

/** Remote video plays (size, time advancing), its decoded frames and received audio grow. */
async function assertMediaFlows(user) {
  const v = await assertRemoteVideoPlays(user.page);
  assert.ok(v.w > 0 && v.h > 0, `${user.name}: remote video has no size`);
  const [v1, a1] = [await inboundVideo(user.page), await inboundAudio(user.page)];
  await sleep(1000);
  const [v2, a2] = [await inboundVideo(user.page), await inboundAudio(user.page)];
  assert.ok(v2.framesDecoded > v1.framesDecoded, `${user.name}: framesDecoded did not grow (${v1.framesDecoded} -> ${v2.framesDecoded})`);
  assert.ok(a2.packets > a1.packets, `${user.name}: no audio received (${a1.packets} -> ${a2.packets} packets)`);
  if (a1.samples > 0) assert.ok(a2.samples > a1.samples, `${user.name}: audio samples did not grow`);
  return { width: v.w, height: v.h, framesInOneSecond: v2.framesDecoded - v1.framesDecoded };
}

/** The incoming-call panel of `callee` shows who calls (no Accept). */
async function showsIncoming(callee, caller) {
  await callee.page.waitForSelector('#incomingPanel:not([hidden])');
  assert.equal(await callee.page.textContent('#incomingText'), `${caller.name} is calling`);
}

/** Idle again: no peer connection, no remote video, can call. */
async function assertIdle(user) {
  await waitCallState(user.page, 'idle');
  const s = await state(user.page);
  assert.equal(s.hasPc, false, `${user.name} still has a peer connection`);
  assert.equal(await user.page.evaluate(() => document.querySelector('#remoteVideo').srcObject), null, `${user.name}'s remote video was not cleared`);
  assert.equal(await user.page.isEnabled('#callBtn'), true, `${user.name} cannot call again`);
}

/**
 * `caller` calls `callee`, who accepts; both decode the other's video and audio; `caller`
 * hangs up. Returns the time from pressing Call to the first decoded remote frame on
 * each side (measured, not asserted).
 */
async function callBothWays(caller, callee) {
  const t0 = Date.now();
  await dial(caller.page, callee.name);
  await acceptIncoming(callee.page, caller.name);
  const [a, b] = await Promise.all([waitFirstFrame(caller.page), waitFirstFrame(callee.page)]);
  await Promise.all([waitCallState(caller.page, 'connected'), waitCallState(callee.page, 'connected')]);
  await waitStatus(caller.page, new RegExp(`in a call with ${callee.name}`));
  await waitStatus(callee.page, new RegExp(`in a call with ${caller.name}`));
  const seen = { [caller.name]: await assertMediaFlows(caller), [callee.name]: await assertMediaFlows(callee) };
  await caller.page.screenshot({ path: screenshotPath(`firefox-call-${caller.name}-calls-${callee.name}-${caller.name}.png`) });
  await callee.page.screenshot({ path: screenshotPath(`firefox-call-${caller.name}-calls-${callee.name}-${callee.name}.png`) });

  await caller.page.click('#hangUpBtn');
  await assertIdle(caller);
  await assertIdle(callee);
  await waitStatus(callee.page, new RegExp(`${caller.name} hung up`));
  return { callerMs: a - t0, calleeMs: b - t0, seen };
}

test('Firefox: a name in use is refused in the page, then Firefox and Chromium sign in and see each other', async (t) => {
  chrome = await login(await openUser(browser, server.baseUrl), 'chromium');
  fox = await openFirefoxUser(server.baseUrl);
  await fox.page.waitForFunction(() => window.duet?.state.signaling === 'open');
  await fox.page.fill('#usernameInput', 'chromium');
  await fox.page.click('#loginBtn');
  await fox.page.waitForFunction(() => /in use|taken/i.test(document.querySelector('#loginStatus').textContent), null, { timeout: 10_000 });
  assert.equal(await fox.page.evaluate(() => document.querySelector('#callPage').hidden), true, 'Firefox took a name in use');
  // A blank name is refused before it reaches the server.
  await fox.page.fill('#usernameInput', '   ');
  await fox.page.click('#loginBtn');
  await fox.page.waitForFunction(() => /type a name/i.test(document.querySelector('#loginStatus').textContent), null, { timeout: 10_000 });
  await login(fox, 'firefox');
  await fox.page.waitForSelector('#userList button[data-name="chromium"]');
  await chrome.page.waitForSelector('#userList button[data-name="firefox"]');
  assert.match(await fox.page.textContent('#whoami'), /firefox/);
  timings.firefox = `${fox.browserName} ${fox.browserVersion}`;
  timings.geckodriver = await geckodriverVersion();
  timings.chromium = browser.version();
  t.diagnostic(`Firefox ${fox.browserVersion}, ${timings.geckodriver}, Chromium ${timings.chromium}`);
});

test('Firefox calls Chromium: video and audio decoded on both sides, then Firefox hangs up', async (t) => {
  const r = await callBothWays(fox, chrome);
  timings.firefoxCallsChromium = r;
  const line = `Firefox calls Chromium -> first decoded remote frame: Firefox (caller) ${r.callerMs} ms, Chromium (callee) ${r.calleeMs} ms`;
  t.diagnostic(line);
  console.log(`TIMING ${line}`);
});

test('Chromium calls Firefox: video and audio decoded on both sides, then Chromium hangs up', async (t) => {
  const r = await callBothWays(chrome, fox);
  timings.chromiumCallsFirefox = r;
  const line = `Chromium calls Firefox -> first decoded remote frame: Chromium (caller) ${r.callerMs} ms, Firefox (callee) ${r.calleeMs} ms`;
  t.diagnostic(line);
  console.log(`TIMING ${line}`);
  writeFileSync(screenshotPath('firefox-timing.json'), JSON.stringify(timings, null, 2));
});

test('decline, both ways: the caller is told', async () => {
  for (const [caller, callee] of [
    [fox, chrome],
    [chrome, fox],
  ]) {
    await dial(caller.page, callee.name);
    await showsIncoming(callee, caller);
    await waitStatus(caller.page, new RegExp(`ringing ${callee.name}`));
    await callee.page.click('#declineBtn');
    await waitStatus(caller.page, new RegExp(`${callee.name} declined`));
    await waitStatus(callee.page, /you declined/);
    await assertIdle(caller);
    await assertIdle(callee);
  }
});

test('busy: a third user calling Firefox in a call is told, and the call goes on', async () => {
  const carol = await login(await openUser(browser, server.baseUrl), 'carol');
  try {
    await dial(fox.page, chrome.name);
    await acceptIncoming(chrome.page, fox.name);
    await Promise.all([waitCallState(fox.page, 'connected'), waitCallState(chrome.page, 'connected')]);
    await dial(carol.page, fox.name);
    await waitStatus(carol.page, /firefox is busy/);
    await assertIdle(carol);
    assert.equal((await state(fox.page)).call, 'connected');
    assert.equal((await state(chrome.page)).call, 'connected');
    await assertMediaFlows(fox);
    await fox.page.click('#hangUpBtn');
    await assertIdle(fox);
    await assertIdle(chrome);
  } finally {
    await closeUser(carol);
  }
});

test('Firefox reloads mid-call: it re-joins without the sign-in form or Accept, media decoded on both sides again', async (t) => {
  await dial(chrome.page, fox.name);
  await acceptIncoming(fox.page, chrome.name);
  await Promise.all([waitFirstFrame(fox.page), waitFirstFrame(chrome.page)]);
  const t0 = Date.now();
  await fox.page.reload();
  const loaded = Date.now();
  // The page's modules start after the sign-in check (/auth/status): the saved session
  // then takes it back to the call page by itself, with nobody typing a name.
  await fox.page.waitForFunction(() => document.querySelector('#loginPage').hidden, null, { timeout: 10_000 });
  const framesAt = await waitFirstFrame(fox.page);
  await Promise.all([waitCallState(fox.page, 'connected'), waitCallState(chrome.page, 'connected')]);
  await assertMediaFlows(fox);
  await assertMediaFlows(chrome);
  assert.match(await fox.page.textContent('#whoami'), /firefox/);
  const line = `Firefox reload mid-call -> Firefox decodes again ${framesAt - loaded} ms after the page loaded (${framesAt - t0} ms after the reload began)`;
  t.diagnostic(line);
  console.log(`TIMING ${line}`);
  await chrome.page.click('#hangUpBtn');
  await assertIdle(chrome);
  await assertIdle(fox);
});

test("Firefox's mute and camera off reach Chromium (silence, black frames), and back on", async () => {
  const brightness = () => remoteBrightness(chrome.page);
  const energyGrowth = async () => {
    const a = await inboundAudioEnergy(chrome.page);
    await sleep(1500);
    return (await inboundAudioEnergy(chrome.page)) - a;
  };
  await dial(fox.page, chrome.name);
  await acceptIncoming(chrome.page, fox.name);
  await Promise.all([waitFirstFrame(fox.page), waitFirstFrame(chrome.page)]);
  await assertRemoteVideoPlays(chrome.page);
  assert.ok((await energyGrowth()) > 0, 'Chromium hears nothing from Firefox before muting');
  assert.ok((await brightness()) > 20, 'Chromium sees a dark picture before camera off');

  await fox.page.click('#muteBtn');
  await fox.page.click('#cameraBtn');
  assert.equal(await fox.page.getAttribute('#muteBtn', 'aria-pressed'), 'true');
  assert.equal(await fox.page.getAttribute('#cameraBtn', 'aria-pressed'), 'true');
  await sleep(500);
  const muted = await energyGrowth();
  assert.ok(muted < 1e-4, `Chromium still hears Firefox while muted (${muted})`);
  await chrome.page.waitForFunction(
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

  await fox.page.click('#muteBtn');
  await fox.page.click('#cameraBtn');
  const deadline = Date.now() + 5000;
  while ((await brightness()) <= 20 && Date.now() < deadline) await sleep(100);
  assert.ok((await brightness()) > 20, 'Chromium still sees black after camera on');
  assert.ok((await energyGrowth()) > 0, 'Chromium hears nothing after unmute');
  await fox.page.click('#hangUpBtn');
  await assertIdle(fox);
  await assertIdle(chrome);
});

test('no page threw an uncaught error or used alert()', () => {
  // Firefox writes uncaught errors and unhandled rejections of a page as
  // "JavaScript error: <page URL>, line N: ..." (the browser's own are not on our origin).
  const foxErrors = fox.consoleLines.filter((l) => l.startsWith(`JavaScript error: ${server.baseUrl}`));
  assert.deepEqual(foxErrors, [], "Firefox's page");
  const chromeErrors = chrome.consoleLines.filter((l) => l.startsWith('pageerror:') || l.startsWith('dialog:'));
  assert.deepEqual(chromeErrors, [], "Chromium's page");
});
