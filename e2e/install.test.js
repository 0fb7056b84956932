// Installable: Chromium reports no installability errors (CDP Page.getInstallabilityErrors:
// manifest, icons, service worker), the service worker serves the app shell with the
// server gone, and the last name signed in with is offered at the next visit.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DuetServer } from './lib/server.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, login } from './lib/browser.js';

let server;
let context;
/** A profile on disk: Chromium refuses to install from an incognito context. */
const profile = mkdtempSync(join(tmpdir(), 'duet-install-'));

before(async () => {
  server = await new DuetServer().start();
  context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await context?.close();
  await server?.stop();
  rmSync(profile, { recursive: true, force: true });
});

test('installable, remembers the name, and opens with the server gone', async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${server.baseUrl}/`);
  const user = { page, context, consoleLines: [] };
  {
    await page.evaluate(() => navigator.serviceWorker.ready);
    const cdp = await context.newCDPSession(page);
    const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
    assert.deepEqual(installabilityErrors, [], `installability errors: ${JSON.stringify(installabilityErrors)}`);
    const manifest = await (await fetch(`${server.baseUrl}/manifest.webmanifest`)).json();
    for (const icon of manifest.icons) {
      const res = await fetch(new URL(icon.src, `${server.baseUrl}/`));
      assert.equal(res.status, 200, `${icon.src} is not served`);
      assert.equal(res.headers.get('content-type'), icon.type);
    }

    await login(user, 'zoe');
    // A new tab of the same browser: no session in it, but the name is offered.
    const again = await context.newPage();
    await again.goto(`${server.baseUrl}/`);
    await again.waitForSelector('#loginPage:not([hidden])');
    assert.equal(await again.inputValue('#usernameInput'), 'zoe');

    // The shell comes from the service worker's cache once the server is gone.
    await again.waitForFunction(() => navigator.serviceWorker.controller !== null);
    await server.stop();
    await context.setOffline(true);
    await again.reload();
    await again.waitForSelector('#loginPage:not([hidden])');
    await again.waitForFunction(() => typeof window.duet === 'object' && window.duet.state.signaling === 'down');
    assert.equal(await again.inputValue('#usernameInput'), 'zoe');
    const shot = await again.evaluate(() => getComputedStyle(document.querySelector('#loginBtn')).backgroundColor);
    assert.notEqual(shot, 'rgba(0, 0, 0, 0)', 'the style sheet did not load offline');
    await context.setOffline(false);
  }
});
