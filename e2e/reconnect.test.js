// End-to-end: the signaling server goes away and comes back on the same port.
// Pages reconnect with backoff, resume their sessions (same name, no sign-in form), and
// can call. A call across a restart is in resume.test.js; here the server comes back
// without its data directory, so it has lost the call, and the pages say so.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { DuetServer } from './lib/server.js';
import {
  acceptIncoming,
  assertRemoteVideoPlays,
  dial,
  launchBrowser,
  login,
  openUser,
  state,
  statusText,
  waitCallState,
  waitFirstFrame,
  waitStatus,
} from './lib/browser.js';

let server;
let browser;
let alice;
let bob;

before(async () => {
  server = await new DuetServer().start();
  browser = await launchBrowser();
  alice = await login(await openUser(browser, server.baseUrl), 'alice');
  bob = await login(await openUser(browser, server.baseUrl), 'bob');
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Resolves once the page has signed in again (`resumed`: and the server still had the session). */
async function waitSignedInAgain(user, { resumed }) {
  const before = user.resumes ?? 0;
  await user.page.waitForFunction(
    (n) => window.duet.state.signaling === 'open' && window.duet.state.resumes > n && document.querySelector('#connection').textContent === 'Connected',
    before,
    { timeout: 30_000 },
  );
  const s = await user.page.evaluate(() => ({ name: window.duet.state.name, resumes: window.duet.state.resumes, resumed: window.duet.state.resumed }));
  user.resumes = s.resumes;
  assert.equal(s.name, user.name);
  assert.equal(s.resumed > (user.resumed ?? 0), resumed, `${user.name}: resumed ${s.resumed}`);
  user.resumed = s.resumed;
  assert.equal(await user.page.isVisible('#loginPage'), false);
}

async function waitReconnecting(page) {
  await page.waitForFunction(() => /reconnecting to the server/i.test(document.querySelector('#connection').textContent));
}

test('server restart while idle: pages reconnect, resume their names and can call', async (t) => {
  await waitStatus(alice.page, /ready/);
  // duet writes the resumable names to its data directory within a second of a change;
  // a login younger than that is not held after a SIGKILL (it signs in afresh).
  await sleep(1500);
  await server.kill();
  await waitReconnecting(alice.page);
  await waitReconnecting(bob.page);
  assert.equal(await alice.page.isDisabled('#callBtn'), true, 'Call stays enabled while offline');
  assert.match(await statusText(alice.page), /ready/i); // the call status is left alone
  const down = Date.now();
  await server.start(); // same port and data directory: the names are held for their tokens
  await Promise.all([waitSignedInAgain(alice, { resumed: true }), waitSignedInAgain(bob, { resumed: true })]);
  t.diagnostic(`signed in again ${Date.now() - down} ms after the server came back`);
  await alice.page.waitForSelector('#userList button[data-name="bob"]');

  await dial(alice.page, 'bob');
  await acceptIncoming(bob.page, 'alice');
  await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]);
  await assertRemoteVideoPlays(bob.page);
});

test('the server comes back without its data during a call: the call ends, the reason stays up, the next call works', async () => {
  await waitCallState(alice.page, 'connected');
  await server.kill();
  await waitReconnecting(alice.page);
  // Until the server is back the call goes on: it does not need the server.
  assert.equal((await state(alice.page)).call, 'connected');
  // A new data directory: a new token key and no held names, as on a new machine.
  rmSync(server.dataDir, { recursive: true, force: true });
  mkdirSync(server.dataDir);
  await server.start();
  await Promise.all([waitSignedInAgain(alice, { resumed: false }), waitSignedInAgain(bob, { resumed: false })]);
  await waitStatus(alice.page, /no longer had the call with bob.*the call has ended/);
  await waitStatus(bob.page, /no longer had the call with alice.*the call has ended/);
  await waitCallState(alice.page, 'idle');
  await waitCallState(bob.page, 'idle');
  // The next reconnect (the server restarting again, now with its data) leaves it up.
  await sleep(1500); // the new logins written to the data directory (see above)
  await server.kill();
  await waitReconnecting(alice.page);
  await server.start();
  await waitSignedInAgain(alice, { resumed: true });
  await waitSignedInAgain(bob, { resumed: true });
  assert.match(await statusText(alice.page), /no longer had the call with bob/i);

  await dial(bob.page, 'alice');
  await acceptIncoming(alice.page, 'bob');
  await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]);
  await bob.page.click('#hangUpBtn');
  await waitCallState(alice.page, 'idle');
  await waitStatus(alice.page, /bob hung up/);
});

test('the login page says when the server is gone, and connects again by itself', async () => {
  const dave = await openUser(browser, server.baseUrl);
  try {
    await dave.page.waitForFunction(() => window.duet.state.signaling === 'open');
    await server.kill();
    await dave.page.waitForFunction(() => /reconnecting|retrying/i.test(document.querySelector('#loginStatus').textContent));
    await dave.page.fill('#usernameInput', 'dave');
    await dave.page.click('#loginBtn');
    // Said at once, and still said by the retries that follow.
    await dave.page.waitForFunction(() => /not connected/i.test(document.querySelector('#loginStatus').textContent));
    await server.start();
    await dave.page.waitForFunction(() => window.duet.state.signaling === 'open', null, { timeout: 30_000 });
    await login(dave, 'dave');
  } finally {
    await dave.context.close();
  }
});

test('killed right after a resume (before it wrote the new token down): the page resumes with the token before', async () => {
  await sleep(1500);
  await server.kill();
  await server.start();
  await waitSignedInAgain(alice, { resumed: true });
  // Within duet's second before it writes the new token to its data directory.
  await server.kill();
  await server.start();
  await waitSignedInAgain(alice, { resumed: true });
  assert.equal(await alice.page.textContent('#whoami'), 'Signed in as alice');
});
