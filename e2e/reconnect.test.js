// End-to-end: the signaling server goes away and comes back on the same port.
// Pages reconnect with backoff, sign in again with the same name, and can call.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DuetServer } from './lib/server.js';
import {
  acceptIncoming,
  assertRemoteVideoPlays,
  dial,
  launchBrowser,
  login,
  openUser,
  state,
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

async function waitSignedInAgain(user) {
  await waitStatus(user.page, /signed in again as/, 30_000);
  await user.page.waitForFunction(() => window.duet.state.signaling === 'open');
  assert.equal((await state(user.page)).name, user.name);
}

test('server restart while idle: pages reconnect, sign in again and can call', async (t) => {
  await server.kill();
  await waitStatus(alice.page, /lost the connection to the server/);
  await waitStatus(bob.page, /lost the connection to the server/);
  assert.equal(await alice.page.isDisabled('#callBtn'), true, 'Call stays enabled while offline');
  const down = Date.now();
  await server.start(); // same port
  await Promise.all([waitSignedInAgain(alice), waitSignedInAgain(bob)]);
  t.diagnostic(`signed in again ${Date.now() - down} ms after the server came back`);
  await alice.page.waitForSelector('#userList button[data-name="bob"]');

  await dial(alice.page, 'bob');
  await acceptIncoming(bob.page, 'alice');
  await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]);
  await assertRemoteVideoPlays(bob.page);
});

test('server restart during a call: the call ends with a message, the next call works', async () => {
  await waitCallState(alice.page, 'connected');
  await server.kill();
  await waitStatus(alice.page, /lost the connection.*call with bob has ended/);
  await waitStatus(bob.page, /lost the connection.*call with alice has ended/);
  await waitCallState(alice.page, 'idle');
  await waitCallState(bob.page, 'idle');
  await server.start();
  await Promise.all([waitSignedInAgain(alice), waitSignedInAgain(bob)]);

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
    await dave.page.waitForFunction(() => /not connected/i.test(document.querySelector('#loginStatus').textContent));
    await server.start();
    await dave.page.waitForFunction(() => window.duet.state.signaling === 'open', null, { timeout: 30_000 });
    await login(dave, 'dave');
  } finally {
    await dave.context.close();
  }
});
