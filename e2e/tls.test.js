// A call over https/wss: duet with --tls-self-signed (certificate generated into a
// temporary data dir), Chromium told to accept it (--ignore-certificate-errors), as
// a LAN user who accepted the certificate once would be. The page must be a secure
// context (camera access depends on it) and signal over wss://.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuetServer } from './lib/server.js';
import { acceptIncoming, closeUser, dial, launchBrowser, login, openUser, waitCallState } from './lib/browser.js';

// The harness polls GET /healthz with Node's fetch, which would refuse the
// self-signed certificate; this process talks only to the duet it started.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

class HttpsDuet extends DuetServer {
  get baseUrl() {
    return `https://127.0.0.1:${this.port}`;
  }
}

let dataDir;
let server;
let browser;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'duet-e2e-tls-'));
  server = await new HttpsDuet({ args: ['--tls-self-signed', '--data-dir', dataDir] }).start();
  browser = await launchBrowser({ args: ['--ignore-certificate-errors'] });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test('duet logs where the certificate is and its SHA-256 fingerprint', () => {
  const log = server.log.join('');
  assert.ok(log.includes(join(dataDir, 'self-signed-cert.pem')), `certificate path not logged:\n${log}`);
  assert.match(log, /fingerprint\S*=\S*([0-9A-F]{2}:){31}[0-9A-F]{2}/, `fingerprint not logged:\n${log}`);
});

test('call over https and wss with a self-signed certificate', async (t) => {
  const alice = await login(await openUser(browser, server.baseUrl), 'alice-tls');
  const bob = await login(await openUser(browser, server.baseUrl), 'bob-tls');
  try {
    const page = await alice.page.evaluate(() => ({
      protocol: location.protocol,
      secure: window.isSecureContext,
    }));
    assert.deepEqual(page, { protocol: 'https:', secure: true });

    const t0 = Date.now();
    await dial(alice.page, bob.name);
    await acceptIncoming(bob.page, alice.name);
    await Promise.all([waitCallState(alice.page, 'connected', 20_000), waitCallState(bob.page, 'connected', 20_000)]);
    // Remote video plays on both sides.
    for (const user of [alice, bob]) {
      await user.page.waitForFunction(
        () => {
          const v = document.querySelector('#remoteVideo');
          return v.srcObject && v.videoWidth > 0 && v.currentTime > 0.2;
        },
        null,
        { timeout: 20_000 },
      );
    }
    t.diagnostic(`https call connected and playing in ${Date.now() - t0} ms`);
  } catch (err) {
    for (const u of [alice, bob]) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
    console.log(`--- duet log\n${server.log.join('')}`);
    throw err;
  } finally {
    await closeUser(alice);
    await closeUser(bob);
  }
});
