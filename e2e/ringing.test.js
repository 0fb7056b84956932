// Ringing like a phone, and the call view's keys: an incoming call plays a ringtone made
// with Web Audio (the page's AudioContext runs and oscillators are connected), the caller
// hears a ringback once the callee's phone rings, the title and favicon change, and with
// the page hidden a system notification is shown (permission granted in the context).
// Escape declines, Enter accepts, m and v toggle, Escape in a call asks before hanging up.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DuetServer } from './lib/server.js';
import { closeUser, launchBrowser, login, openUser, waitCallState, waitFirstFrame, waitStatus } from './lib/browser.js';

let server;
let browser;
let alice;
let bob;

before(async () => {
  server = await new DuetServer().start();
  browser = await launchBrowser();
  alice = await openUser(browser, server.baseUrl);
  bob = await openUser(browser, server.baseUrl);
  // Only notifications would take the media grant away, and with it the host candidates.
  await bob.context.grantPermissions(['notifications', 'camera', 'microphone'], { origin: server.baseUrl });
  await login(alice, 'alice');
  await login(bob, 'bob');
});

after(async () => {
  for (const u of [alice, bob]) {
    if (u && process.env.E2E_VERBOSE) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
    await closeUser(u);
  }
  await browser?.close();
  await server?.stop();
});

const ringing = (page) => page.evaluate(() => window.duet.state.ringing);

/** Wait until the page plays `tone` on a running AudioContext with an oscillator connected. */
async function waitTone(page, tone) {
  try {
    await page.waitForFunction(
      (t) => {
        const r = window.duet.state.ringing;
        return r.tone === t && r.audio === 'running' && r.oscillators > 0;
      },
      tone,
      { timeout: 10_000 },
    );
  } catch {
    throw new Error(`no ${tone} playing: ${JSON.stringify(await ringing(page))}`);
  }
}

test('an incoming call rings, changes title and favicon; Escape declines and all stops', async () => {
  await alice.page.fill('#callToUsernameInput', 'bob');
  await alice.page.click('#callBtn');
  await bob.page.waitForSelector('#incomingPanel:not([hidden])');
  await waitTone(bob.page, 'ringtone');
  assert.equal(await bob.page.title(), 'alice is calling – duet');
  assert.match(await bob.page.getAttribute('#favicon', 'href'), /^data:image\/svg\+xml/);
  await waitTone(alice.page, 'ringback');

  await bob.page.keyboard.press('Escape');
  await waitCallState(bob.page, 'idle');
  await waitStatus(alice.page, /declined/);
  const after = await ringing(bob.page);
  assert.equal(after.tone, null);
  assert.equal(await bob.page.title(), 'duet');
  assert.equal(await bob.page.getAttribute('#favicon', 'href'), 'icon.svg');
  await alice.page.waitForFunction(() => window.duet.state.ringing.tone === null);
});

test('with the page hidden an incoming call shows a notification; Enter accepts', async () => {
  await bob.page.evaluate(() => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
  });
  const before = (await ringing(bob.page)).notificationsShown;
  await alice.page.fill('#callToUsernameInput', 'bob');
  await alice.page.click('#callBtn');
  await bob.page.waitForSelector('#incomingPanel:not([hidden])');
  try {
    await bob.page.waitForFunction((n) => window.duet.state.ringing.notificationsShown > n, before, { timeout: 10_000 });
  } catch {
    throw new Error(`no notification shown: ${JSON.stringify(await ringing(bob.page))}`);
  }
  assert.equal((await ringing(bob.page)).notificationTitle, 'alice is calling');
  await bob.page.evaluate(() => {
    delete document.visibilityState;
    delete document.hidden;
  });

  await bob.page.evaluate(() => document.activeElement.blur());
  await bob.page.keyboard.press('Enter');
  await bob.page.waitForFunction(() => window.duet.state.call !== 'incoming', null, { timeout: 5000 }).catch(async () => {
    throw new Error(`Enter did not accept: ${JSON.stringify(await bob.page.evaluate(() => ({ call: window.duet.state.call, active: document.activeElement?.outerHTML.slice(0, 80), vis: document.visibilityState })))}`);
  });
  const dump = (u) => u.page.evaluate(() => {
    const s = window.duet.state;
    return { nav: performance.getEntriesByType('navigation')[0]?.type, rejoins: s.rejoins, resumes: s.resumes, restarts: s.iceRestarts, call: s.call, pc: s.pc?.connectionState, ice: s.pc?.iceConnectionState, status: document.querySelector('#callStatus').textContent };
  });
  await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]).catch(async (err) => {
    throw new Error(`${err.message}: alice ${JSON.stringify(await dump(alice))}, bob ${JSON.stringify(await dump(bob))}`);
  });
  await waitCallState(bob.page, 'connected');
  assert.equal((await ringing(bob.page)).tone, null);
  assert.equal((await ringing(alice.page)).tone, null);
});

test('m and v toggle mute and camera; Escape asks before hanging up', async () => {
  const { page } = bob;
  await page.keyboard.press('m');
  assert.equal(await page.getAttribute('#muteBtn', 'aria-pressed'), 'true');
  await page.keyboard.press('v');
  assert.equal(await page.getAttribute('#cameraBtn', 'aria-pressed'), 'true');
  await page.keyboard.press('m');
  await page.keyboard.press('v');
  assert.equal(await page.getAttribute('#muteBtn', 'aria-pressed'), 'false');
  assert.equal(await page.getAttribute('#cameraBtn', 'aria-pressed'), 'false');

  // Closing the tab in a call asks first; idle it does not (checked at the end).
  const asks = () => page.evaluate(() => !window.dispatchEvent(new Event('beforeunload', { cancelable: true })));
  assert.equal(await asks(), true, 'closing the tab in a call does not ask');

  await page.keyboard.press('Escape');
  await page.waitForSelector('#hangUpConfirm[open]');
  await page.keyboard.press('Escape'); // closes the question: the call goes on
  await page.waitForSelector('#hangUpConfirm', { state: 'hidden' });
  assert.equal((await page.evaluate(() => window.duet.state.call)), 'connected');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'hangUpBtn');

  await page.keyboard.press('Escape');
  await page.click('#hangUpConfirm button[value="hangup"]');
  await waitCallState(page, 'idle');
  await waitCallState(alice.page, 'idle');
  assert.equal(await asks(), false, 'closing the tab while idle asks');
});
