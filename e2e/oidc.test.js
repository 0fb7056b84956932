// End-to-end: sign-in with a real OpenID provider. The npm package oidc-provider (a
// certified OpenID Connect implementation) runs in this process on a loopback port with
// two accounts and its development login and consent pages; duet runs with --oidc-issuer
// pointing at it. Chromium walks the real flow for both users: duet's "Sign in with ..."
// button, the provider's login and consent pages, the redirect back; both land on the
// call page under the names the provider gave and call each other with media. A user
// whose address is outside --oidc-allowed-domain gets duet's error page; sign-out ends
// the session. (Bad ID tokens and key rotation: tests/oidc.rs, which mints its own.)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Provider from 'oidc-provider';
import { DuetServer, freePort } from './lib/server.js';
import { acceptIncoming, dial, inboundVideo, launchBrowser, openUser, waitCallState, waitFirstFrame } from './lib/browser.js';

const CLIENT_ID = 'duet';
const CLIENT_SECRET = 'the secret the provider gave this duet';

const ACCOUNTS = {
  'alice-sub': { preferred_username: 'alice', name: 'Alice A.', email: 'alice@example.org', email_verified: true },
  'bob-sub': { preferred_username: 'bob', name: 'Bob B.', email: 'bob@example.org', email_verified: true },
  'mallory-sub': { preferred_username: 'mallory', email: 'mallory@elsewhere.net', email_verified: true },
};

let provider;
let providerServer;
let server;
let narrow;
let browser;
const users = [];

before(async () => {
  const [providerPort, duetPort, narrowPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const issuer = `http://127.0.0.1:${providerPort}`;
  provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [`http://127.0.0.1:${duetPort}/auth/callback`, `http://127.0.0.1:${narrowPort}/auth/callback`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
    },
    // The scope's claims go into the ID token itself (duet reads no userinfo).
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    cookies: { keys: ['a cookie key for the test provider'] },
    // The development login page takes any login: the login is the account id.
    async findAccount(_ctx, id) {
      const claims = ACCOUNTS[id];
      if (!claims) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
    },
  });
  await new Promise((ok) => {
    providerServer = provider.listen(providerPort, '127.0.0.1', ok);
  });
  const oidcArgs = [
    '--oidc-issuer', issuer,
    '--oidc-client-id', CLIENT_ID,
    '--oidc-client-secret', CLIENT_SECRET,
    '--oidc-provider-name', 'Test Provider',
  ];
  server = await new DuetServer({ port: duetPort, args: oidcArgs }).start();
  narrow = await new DuetServer({ port: narrowPort, args: [...oidcArgs, '--oidc-allowed-domain', 'example.org'] }).start();
  browser = await launchBrowser();
});

after(async () => {
  for (const u of users) await u.context.close().catch(() => {});
  await browser?.close();
  await server?.stop();
  await narrow?.stop();
  await new Promise((ok) => (providerServer ? providerServer.close(ok) : ok()));
});

/** Duet's button, then the provider's login and consent pages, as `login`. */
async function signInAtProvider(baseUrl, login) {
  const user = await openUser(browser, baseUrl);
  users.push(user);
  const { page } = user;
  await page.waitForSelector('#oidcLoginBtn:not([hidden])');
  assert.equal(await page.textContent('#oidcLoginBtn'), 'Sign in with Test Provider');
  assert.equal(await page.isHidden('#loginForm'), true, 'the name form is shown next to the provider');
  await page.click('#oidcLoginBtn');
  // The provider's own pages.
  await page.waitForSelector('input[name="login"]');
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any password');
  await page.click('button[type="submit"]');
  await page.waitForSelector('button:has-text("Continue")');
  await page.click('button:has-text("Continue")');
  return user;
}

test('two users sign in at the provider, land on the call page under its names, and call with media', async () => {
  const alice = await signInAtProvider(server.baseUrl, 'alice-sub');
  await alice.page.waitForSelector('#callPage:not([hidden])');
  assert.match(await alice.page.textContent('#whoami'), /alice/);
  const cookies = await alice.context.cookies();
  const session = cookies.find((c) => c.name === 'duet_session');
  assert.ok(session, 'no session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Lax');
  assert.equal(cookies.find((c) => c.name === 'duet_oidc'), undefined, 'the flow cookie outlived the sign-in');

  const bob = await signInAtProvider(server.baseUrl, 'bob-sub');
  await bob.page.waitForSelector('#callPage:not([hidden])');
  assert.match(await bob.page.textContent('#whoami'), /bob/);

  await alice.page.waitForSelector('#userList button[data-name="bob"]');
  await dial(alice.page, 'bob');
  await acceptIncoming(bob.page, 'alice');
  await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]);
  await Promise.all([waitCallState(alice.page, 'connected'), waitCallState(bob.page, 'connected')]);
  for (const user of [alice, bob]) {
    const s = await inboundVideo(user.page);
    assert.ok(s.framesDecoded > 0, `${user.page.url()}: no frames decoded`);
  }
});

test('sign-out ends the session: the page offers the provider again', async () => {
  const { page, context } = users[1];
  // The call view covers the top bar during a call: hang up first, back to the lobby.
  if ((await page.evaluate(() => window.duet.state.call)) !== 'idle') {
    await page.click('#hangUpBtn');
    await page.waitForFunction(() => window.duet.state.call === 'idle');
  }
  await page.click('#signOutBtn');
  await page.waitForSelector('#oidcLoginBtn');
  await page.waitForFunction(() => !document.querySelector('#oidcForm').hidden);
  const cookies = await context.cookies();
  assert.equal(cookies.find((c) => c.name === 'duet_session'), undefined);
});

test('a user outside --oidc-allowed-domain gets a page that says why', async () => {
  const mallory = await signInAtProvider(narrow.baseUrl, 'mallory-sub');
  const { page } = mallory;
  await page.waitForSelector('#oidcError');
  assert.equal(await page.getAttribute('#oidcError', 'data-code'), 'oidc-not-allowed');
  assert.match(await page.textContent('#oidcError'), /mallory@elsewhere\.net may not sign in here.*example\.org/);
  const cookies = await mallory.context.cookies();
  assert.equal(cookies.find((c) => c.name === 'duet_session'), undefined);
  // Someone at the domain gets in on the same server.
  const alice = await signInAtProvider(narrow.baseUrl, 'alice-sub');
  await alice.page.waitForSelector('#callPage:not([hidden])');
});
