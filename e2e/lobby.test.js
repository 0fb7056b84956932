// The two views at phone and desktop sizes: the lobby (who is online, the dial box, my
// name, sign-out) and the full-window call view (remote picture cropped to fill the
// window, a movable self-view, floating controls that fade when idle). At 1280x800,
// 390x844 and 844x390 every essential control lies inside the viewport with no
// scrolling, also with a 64-character name. Screenshots of each view at each size go to
// e2e/artifacts/ (view-SIZE-VIEW.png).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DuetServer } from './lib/server.js';
import { closeUser, launchBrowser, login, openUser, screenshotPath, waitCallState, waitFirstFrame } from './lib/browser.js';

const SIZES = [
  { width: 1280, height: 800 },
  { width: 390, height: 844 },
  { width: 844, height: 390 },
];

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** A name of exactly 64 characters (the longest allowed), unique per size. */
function longName(tag) {
  return `${tag}-${'Maximiliane-Alexandra-von-Hohenzollern-Sigmaringen-'.repeat(2)}`.slice(0, 64);
}

/** Each selector's box lies inside the viewport; the page scrolls neither way. */
async function assertFits(page, selectors, what) {
  const result = await page.evaluate((sels) => {
    const vw = window.innerWidth;
    const vh = window.innerHeight;
    const out = [];
    for (const sel of sels) {
      const el = document.querySelector(sel);
      if (!el) {
        out.push(`${sel} is missing`);
        continue;
      }
      const r = el.getBoundingClientRect();
      // A control must also be the thing at its centre: not clipped by a scrolling list,
      // not under another element.
      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      if (r.width === 0 || r.height === 0) out.push(`${sel} is not shown`);
      else if (el.matches('button, input') && !(hit && el.contains(hit))) out.push(`${sel} is covered by ${hit?.id || hit?.className || hit?.tagName}`);
      else if (r.left < 0 || r.top < 0 || r.right > vw + 0.5 || r.bottom > vh + 0.5) {
        out.push(`${sel} at ${Math.round(r.left)},${Math.round(r.top)}-${Math.round(r.right)},${Math.round(r.bottom)} is outside ${vw}x${vh}`);
      }
    }
    const root = document.scrollingElement;
    if (root.scrollWidth > root.clientWidth) out.push(`the page scrolls sideways (${root.scrollWidth} > ${root.clientWidth})`);
    if (root.scrollHeight > root.clientHeight) out.push(`the page scrolls down (${root.scrollHeight} > ${root.clientHeight})`);
    for (const el of document.querySelectorAll('main, .lobby, .topbar')) {
      if (el.scrollWidth > el.clientWidth + 1) out.push(`${el.className || el.tagName} scrolls sideways`);
    }
    return out;
  }, selectors);
  assert.deepEqual(result, [], `${what}: ${result.join('; ')}`);
}

for (const size of SIZES) {
  const tag = `${size.width}x${size.height}`;
  test(`views at ${tag}: lobby, incoming call and call view fit, with a 64-character name`, async () => {
    const shot = (view, page) => page.screenshot({ path: screenshotPath(`view-${tag}-${view}.png`) });
    // A server per size: names held from the last size's users would fill the list.
    const server = await new DuetServer().start();
    const me = await openUser(browser, server.baseUrl, { viewport: size });
    const other = await openUser(browser, server.baseUrl, { viewport: size });
    try {
      const myName = longName(`me${size.width}`);
      const otherName = longName(`it${size.width}`);
      await me.page.waitForFunction(() => window.duet?.state.signaling === 'open');
      await me.page.fill('#usernameInput', myName);
      await assertFits(me.page, ['#usernameInput', '#loginBtn'], `sign-in at ${tag}`);
      await shot('login', me.page);

      await login(other, otherName);
      await login(me, myName);
      await me.page.waitForSelector(`#userList button[data-name="${otherName}"]`);
      assert.equal(await me.page.evaluate(() => document.activeElement?.id), 'callToUsernameInput', 'focus after sign-in is not on the dial box');
      await assertFits(
        me.page,
        ['#whoami', '#signOutBtn', '#usersTitle', '#callToUsernameInput', '#callBtn', `#userList button[data-name="${otherName}"]`, '#localVideo'],
        `lobby at ${tag}`,
      );
      await shot('lobby', me.page);

      // The dial box filters the list.
      await me.page.fill('#callToUsernameInput', 'nobody-matches');
      assert.equal(await me.page.isVisible(`#userList button[data-name="${otherName}"]`), false, 'the filter kept a non-matching name');
      await me.page.fill('#callToUsernameInput', '');

      // The other calls me: the call view with Accept and Decline.
      await other.page.click(`#userList button[data-name="${myName}"]`);
      await me.page.waitForSelector('#incomingPanel:not([hidden])');
      assert.equal(await me.page.evaluate(() => document.activeElement?.id), 'acceptBtn', 'focus on an incoming call is not on Accept');
      await assertFits(me.page, ['#incomingText', '#acceptBtn', '#declineBtn'], `incoming call at ${tag}`);
      await shot('incoming', me.page);
      await other.page.waitForSelector('#hangUpBtn:not([hidden])');
      await assertFits(other.page, ['#hangUpBtn', '#callStatus'], `outgoing call at ${tag}`);
      await shot('outgoing', other.page);

      await me.page.click('#acceptBtn');
      await Promise.all([waitFirstFrame(me.page), waitFirstFrame(other.page)]);
      await waitCallState(me.page, 'connected');
      await me.page.mouse.move(size.width / 2, size.height / 2);
      await assertFits(me.page, ['#muteBtn', '#cameraBtn', '#hangUpBtn', '#localVideo', '#callTimer'], `call view at ${tag}`);
      // The remote picture covers the whole window, cropped rather than letterboxed.
      const remote = await me.page.evaluate(() => {
        const v = document.querySelector('#remoteVideo');
        const r = v.getBoundingClientRect();
        return { w: r.width, h: r.height, fit: getComputedStyle(v).objectFit, vw: innerWidth, vh: innerHeight, vidW: v.videoWidth };
      });
      assert.deepEqual([remote.w, remote.h, remote.fit], [remote.vw, remote.vh, 'cover'], `remote video ${JSON.stringify(remote)}`);
      assert.ok(remote.vidW > 0, 'the remote video has no picture');
      await me.page.waitForFunction(() => document.querySelector('#remoteVideo').currentTime > 0.3);
      // The quality bars get a level from the stats; pressing them shows the details.
      await me.page.waitForFunction(() => Number(document.querySelector('#qualityBtn').dataset.level) > 0, null, { timeout: 10_000 });
      assert.match(await me.page.getAttribute('#qualityBtn', 'aria-label'), /^Connection quality: (good|fair|poor|bad)$/);
      assert.equal(await me.page.isVisible('#stats'), false, 'the detailed stats are shown before asking');
      await me.page.click('#qualityBtn');
      await me.page.waitForFunction(() => /\d+×\d+/.test(document.querySelector('#stats').textContent));
      assert.equal(await me.page.isVisible('#stats'), true);
      assert.equal(await me.page.getAttribute('#qualityBtn', 'aria-expanded'), 'true');
      await assertFits(me.page, ['#qualityBtn', '#stats', '#fullscreenBtn'], `call view with details at ${tag}`);
      await shot('call', me.page);

      // The self-view moves with a drag and stays inside the window.
      const box = await me.page.locator('#localVideo').boundingBox();
      await me.page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await me.page.mouse.down();
      await me.page.mouse.move(20, size.height - 20, { steps: 5 });
      await me.page.mouse.up();
      const moved = await me.page.locator('#localVideo').boundingBox();
      assert.ok(moved.x < box.x, `the self-view did not move left (${box.x} -> ${moved.x})`);
      await assertFits(me.page, ['#localVideo'], `moved self-view at ${tag}`);

      // Idle: the controls fade; a pointer move brings them back.
      await me.page.waitForSelector('#callView[data-idle]', { timeout: 10_000 });
      await me.page.waitForFunction(() => Number(getComputedStyle(document.querySelector('.call-controls')).opacity) < 0.1, null, { timeout: 5000 });
      // Keep moving (they fade again 3 s after the last move; a loaded machine may be slower).
      let back = false;
      for (let i = 0; i < 40 && !back; i += 1) {
        await me.page.mouse.move(size.width / 2 + (i % 2) * 10, size.height / 3);
        back = await me.page.evaluate(() => !('idle' in document.querySelector('#callView').dataset) && getComputedStyle(document.querySelector('.call-controls')).opacity === '1');
        if (!back) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(back, 'a pointer move did not bring the controls back');

      await me.page.click('#hangUpBtn');
      await waitCallState(me.page, 'idle');
      await waitCallState(other.page, 'idle');
      assert.equal(await me.page.evaluate(() => document.activeElement?.id), 'callToUsernameInput', 'focus after the call is not on the dial box');
      assert.equal(await me.page.isVisible('#hangUpBtn'), false, 'Hang up is shown while idle');
      await assertFits(me.page, ['#callToUsernameInput', '#callBtn', '#callStatus'], `lobby after the call at ${tag}`);
    } finally {
      await closeUser(me);
      await closeUser(other);
      await server.stop();
    }
  });
}
