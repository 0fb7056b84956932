// Accessibility: axe-core (npm) run inside the page in each view (sign-in, lobby,
// incoming call, in a call), in light and dark colour schemes, against WCAG 2.1 A and AA.
// No serious or critical violation may remain; lesser ones are printed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { DuetServer } from './lib/server.js';
import { closeUser, launchBrowser, login, openUser, waitCallState, waitFirstFrame } from './lib/browser.js';

const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

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

/** Run axe in the page; returns the violations as {id, impact, nodes: [target…]}. */
async function axe(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: axePath });
  return page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
      resultTypes: ['violations'],
    });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
}

async function check(page, view, scheme) {
  const violations = await axe(page);
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const line = violations.map((v) => `${v.impact} ${v.id} (${v.nodes.length}: ${v.nodes.slice(0, 3).join(', ')})`).join('; ');
  console.log(`axe ${view} ${scheme}: ${violations.length} violation(s)${line ? `: ${line}` : ''}`);
  assert.deepEqual(bad, [], `axe found serious or critical violations in the ${view} view (${scheme})`);
}

for (const scheme of ['light', 'dark']) {
  test(`axe: no serious or critical violation in any view (${scheme})`, async () => {
    const a = await openUser(browser, server.baseUrl, { viewport: { width: 1280, height: 800 } });
    const b = await openUser(browser, server.baseUrl, { viewport: { width: 390, height: 844 } });
    try {
      for (const u of [a, b]) await u.page.emulateMedia({ colorScheme: scheme });
      await a.page.waitForFunction(() => window.duet?.state.signaling === 'open');
      await check(a.page, 'sign-in', scheme);
      const an = `ann-${scheme}`;
      const bn = `ben-${scheme}`;
      await login(a, an);
      await login(b, bn);
      await a.page.waitForSelector(`#userList button[data-name="${bn}"]`);
      await check(a.page, 'lobby', scheme);
      await check(b.page, 'lobby (phone)', scheme);
      await b.page.click(`#userList button[data-name="${an}"]`);
      await a.page.waitForSelector('#incomingPanel:not([hidden])');
      await check(a.page, 'incoming call', scheme);
      await check(b.page, 'outgoing call (phone)', scheme);
      await a.page.click('#acceptBtn');
      await Promise.all([waitFirstFrame(a.page), waitFirstFrame(b.page)]);
      await waitCallState(a.page, 'connected');
      await check(a.page, 'in a call', scheme);
      await a.page.keyboard.press('Escape');
      await a.page.waitForSelector('#hangUpConfirm[open]');
      await check(a.page, 'hang-up question', scheme);
      await a.page.click('#hangUpConfirm button[value="hangup"]');
      await waitCallState(b.page, 'idle');
    } finally {
      await closeUser(a);
      await closeUser(b);
    }
  });
}
