// End-to-end: duet with a household password (--password-file holding a hash printed
// by the real `duet hash-password`), real Chromium. The page asks for the password
// before the name; a wrong one is refused in the page; with the right one two users sign
// in and call each other with media. A WebSocket without the session cookie gets 401.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuetServer, duetBinary } from './lib/server.js';
import { acceptIncoming, dial, inboundVideo, launchBrowser, login, openUser, waitCallState, waitFirstFrame } from './lib/browser.js';

const PASSWORD = 'our kitchen table';

let dir;
let server;
let browser;
const users = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'duet-auth-'));
  const hash = execFileSync(duetBinary(), ['hash-password'], { input: `${PASSWORD}\n` }).toString();
  assert.match(hash, /^\$argon2id\$/);
  const file = join(dir, 'password');
  writeFileSync(file, hash);
  server = await new DuetServer({ args: ['--password-file', file] }).start();
  browser = await launchBrowser();
});

after(async () => {
  for (const u of users) await u.context.close().catch(() => {});
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The status of a WebSocket upgrade to /ws with no cookie. */
function bareUpgradeStatus(port) {
  return new Promise((ok, fail) => {
    const req = request({
      host: '127.0.0.1',
      port,
      path: '/ws',
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      ok(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      ok(res.statusCode);
    });
    req.on('error', fail);
    req.end();
  });
}

async function signIn(name, { firstTry } = {}) {
  const user = await openUser(browser, server.baseUrl);
  users.push(user);
  const { page } = user;
  await page.waitForSelector('#passwordForm:not([hidden])');
  assert.equal(await page.isHidden('#loginForm'), true, 'the name form is shown before the password');
  if (firstTry) {
    await page.fill('#passwordInput', firstTry);
    await page.click('#passwordBtn');
    await page.waitForFunction(() => /not the password/.test(document.querySelector('#passwordStatus').textContent));
    assert.equal(await page.isHidden('#loginForm'), true, 'a wrong password let the page in');
  }
  await page.fill('#passwordInput', PASSWORD);
  await page.click('#passwordBtn');
  await page.waitForSelector('#loginForm:not([hidden])');
  const cookies = await user.context.cookies();
  const session = cookies.find((c) => c.name === 'duet_session');
  assert.ok(session, 'no session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Lax');
  return login(user, name);
}

test('a WebSocket without the session is refused with 401', async () => {
  assert.equal(await bareUpgradeStatus(server.port), 401);
});

test('the page asks for the password, refuses a wrong one, and two users call with media', async () => {
  const alice = await signIn('alice', { firstTry: 'our kitchen tabel' });
  const bob = await signIn('bob');
  await alice.page.waitForSelector('#userList button[data-name="bob"]');
  await dial(alice.page, 'bob');
  await acceptIncoming(bob.page, 'alice');
  await Promise.all([waitFirstFrame(alice.page), waitFirstFrame(bob.page)]);
  await Promise.all([waitCallState(alice.page, 'connected'), waitCallState(bob.page, 'connected')]);
  for (const user of [alice, bob]) {
    const s = await inboundVideo(user.page);
    assert.ok(s.framesDecoded > 0, `${user.name}: no frames decoded`);
  }
});

test('a reload keeps the session; sign-out ends it', async () => {
  const { page } = users[1];
  await page.reload();
  // Signed in: straight to the name form.
  await page.waitForFunction(() => window.duet?.state.signaling === 'open');
  assert.equal(await page.isHidden('#passwordForm'), true);
  // The page re-joins its call, and the full-window call view covers the top bar: hang up
  // to get back to the lobby, where Sign out is.
  if ((await page.evaluate(() => window.duet.state.call)) !== 'idle') {
    await page.click('#hangUpBtn');
    await page.waitForFunction(() => window.duet.state.call === 'idle');
  }
  await page.click('#signOutBtn');
  await page.waitForSelector('#passwordForm:not([hidden])');
  const cookies = await users[1].context.cookies();
  assert.equal(cookies.find((c) => c.name === 'duet_session'), undefined);
});

/** An HS256 JWT, made by hand with node:crypto (what an application's backend does). */
function hs256(claims, secret) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const sig = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

test("an application's token on the page URL signs the user in at once under its name", async () => {
  const secret = 'an application secret of 32 bytes or more';
  const jwtServer = await new DuetServer({ args: ['--jwt-secret', secret] }).start();
  try {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const open = async (sub, name) => {
      const user = await openUser(browser, jwtServer.baseUrl, { query: `?token=${hs256({ sub, name, exp }, secret)}` });
      users.push(user);
      user.name = name;
      // No name typed: the server logged the socket in as the token's user.
      await user.page.waitForSelector('#callPage:not([hidden])');
      assert.match(await user.page.textContent('#whoami'), new RegExp(name));
      return user;
    };
    const carol = await open('u-carol', 'Carol');
    const dave = await open('u-dave', 'Dave');
    await dial(carol.page, 'Dave');
    await acceptIncoming(dave.page, 'Carol');
    await Promise.all([waitFirstFrame(carol.page), waitFirstFrame(dave.page)]);
    // A page without a token cannot connect: the upgrade gets 401.
    assert.equal(await bareUpgradeStatus(jwtServer.port), 401);
  } finally {
    await jwtServer.stop();
  }
});
