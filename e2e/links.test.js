// Links that call someone: `/call/NAME` (redirected to the client as `#call=NAME`) opens
// the app and, once signed in, calls NAME; "Copy my link" gives the link that calls me.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DuetServer } from './lib/server.js';
import { acceptIncoming, closeUser, launchBrowser, login, openUser, waitCallState, waitFirstFrame } from './lib/browser.js';

let server;
let browser;

before(async () => {
  server = await new DuetServer().start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('/call/NAME redirects to the client with #call=NAME, still percent-encoded', async () => {
  const res = await fetch(`${server.baseUrl}/call/b%C3%B6b%20x`, { redirect: 'manual' });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get('location'), '../#call=b%C3%B6b%20x');
});

test('an unknown address gets a 404 page that links home', async () => {
  const res = await fetch(`${server.baseUrl}/no/such/page`);
  assert.equal(res.status, 404);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const body = await res.text();
  assert.match(body, /Nothing here/);
  assert.match(body, /<a href="\/">/);
});

test('/call/bob calls bob after sign-in; "Copy my link" gives /call/alice', async () => {
  const bob = await openUser(browser, server.baseUrl);
  const alice = await openUser(browser, server.baseUrl, { query: 'call/bob' });
  try {
    await login(bob, 'bob');
    assert.equal(new URL(alice.page.url()).hash, '#call=bob');
    await login(alice, 'alice');
    await acceptIncoming(bob.page, 'alice');
    await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]);
    await waitCallState(alice.page, 'connected');
    assert.equal(new URL(alice.page.url()).hash, '', 'the link would call again on a reload');
    await alice.page.click('#hangUpBtn');
    await waitCallState(bob.page, 'idle');

    await alice.context.grantPermissions(['clipboard-read', 'clipboard-write', 'camera', 'microphone'], { origin: server.baseUrl });
    await alice.page.click('#copyLinkBtn');
    const link = `${server.baseUrl}/call/alice`;
    await alice.page.waitForFunction((l) => document.querySelector('#callStatus').textContent.includes(l), link);
    assert.equal(await alice.page.evaluate(() => navigator.clipboard.readText()), link);
  } finally {
    await closeUser(alice);
    await closeUser(bob);
  }
});
