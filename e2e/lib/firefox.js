// Debian's firefox-esr driven through geckodriver's W3C WebDriver HTTP API (Node's own
// fetch, no client library), with Firefox's fake camera and microphone. A Firefox user is
// shaped like one of browser.js's: `{page, consoleLines, name}`, where `page` answers the
// few Playwright Page calls browser.js's helpers make (evaluate, waitForFunction,
// waitForSelector, fill, click, textContent, ...), so `login`, `dial`, `acceptIncoming`,
// `waitFirstFrame` and the rest drive Firefox and Chromium alike.
//
// Why not selenium-webdriver: the handful of commands used here are plain JSON over HTTP;
// a client library would add a dependency tree and a second way of waiting for things
// while we need the same waits as the Chromium helpers.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './server.js';

export const FIREFOX = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';
/** From crates.io (`cargo install geckodriver`): Debian has no package for it. */
export const GECKODRIVER = process.env.GECKODRIVER_PATH || 'geckodriver';

/** The W3C key under which an element reference travels. */
const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

const PREFS = {
  // A fake camera (a frame whose colour changes) and a tone; no permission prompt.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // Firefox leaves loopback addresses out of ICE; the test namespace has nothing else.
  'media.peerconnection.ice.loopback': true,
  // Host candidates as addresses, not mDNS names: nothing answers mDNS in the namespace
  // (the same reason browser.js turns Chromium's WebRtcHideLocalIpsWithMdns off).
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  // The page's console on Firefox's stdout, which geckodriver passes on to us.
  'devtools.console.stdout.content': true,
  // The page asks before a tab in a call is closed or reloaded (beforeunload); a test that
  // reloads mid-call answers "leave", as browser.js does for Chromium.
  'dom.disable_beforeunload': true,
};

export class WebDriverError extends Error {
  constructor(command, error, message) {
    super(`WebDriver ${command}: ${error}: ${message}`);
    /** The W3C error code ("no such element", "javascript error", ...). */
    this.code = error;
  }
}

/** Errors after which an element command may succeed if tried again a little later. */
const RETRYABLE = new Set(['no such element', 'element not interactable', 'element click intercepted', 'stale element reference']);

/** One geckodriver process with one Firefox session in it. */
class Session {
  constructor(proc, base, id, log) {
    this.proc = proc;
    this.base = base;
    this.id = id;
    this.log = log;
    this.exited = new Promise((ok) => proc.once('exit', ok));
  }

  async command(method, path, body) {
    const url = `${this.base}/session/${this.id}${path}`;
    return wdFetch(method, url, body);
  }

  async close() {
    await this.command('DELETE', '').catch(() => {});
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      await Promise.race([this.exited, sleep(5000)]);
      if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    }
  }
}

async function wdFetch(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json; charset=utf-8' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new WebDriverError(`${method} ${url}`, `HTTP ${res.status}`, text.slice(0, 500));
  }
  const value = json?.value;
  if (!res.ok || (value && typeof value === 'object' && typeof value.error === 'string')) {
    throw new WebDriverError(`${method} ${new URL(url).pathname}`, value?.error ?? `HTTP ${res.status}`, value?.message ?? text.slice(0, 500));
  }
  return value;
}

/**
 * Start geckodriver on a free loopback port and a headless Firefox session in it.
 * @param {{width?: number, height?: number, prefs?: object}} [options]
 */
async function startSession({ width = 1000, height = 900, prefs = {} } = {}) {
  const port = await freePort();
  const log = [];
  // --allow-system-access: grantMedia below runs in Firefox's parent process.
  const proc = spawn(GECKODRIVER, ['--host', '127.0.0.1', '--port', String(port), '--allow-system-access'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: process.env,
  });
  const keep = (chunk) => {
    log.push(chunk.toString());
    if (log.length > 2000) log.splice(0, 1000);
    if (process.env.E2E_VERBOSE) process.stderr.write(`[firefox] ${chunk}`);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const spawnError = new Promise((_, fail) =>
    proc.once('error', (err) => fail(new Error(`cannot run ${GECKODRIVER}: ${err.message} (cargo install geckodriver, or set GECKODRIVER_PATH)`))),
  );
  const base = `http://127.0.0.1:${port}`;
  const ready = (async () => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`geckodriver exited with ${proc.exitCode}:\n${log.join('')}`);
      try {
        const status = await wdFetch('GET', `${base}/status`);
        if (status?.ready) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`geckodriver not ready within 15 s:\n${log.join('')}`);
      await sleep(50);
    }
  })();
  try {
    await Promise.race([ready, spawnError]);
    const created = await wdFetch('POST', `${base}/session`, {
      capabilities: {
        alwaysMatch: {
          browserName: 'firefox',
          acceptInsecureCerts: true,
          'moz:firefoxOptions': {
            binary: FIREFOX,
            args: ['-headless'],
            prefs: { ...PREFS, ...prefs },
          },
        },
      },
    });
    const session = new Session(proc, base, created.sessionId, log);
    session.capabilities = created.capabilities;
    await session.command('POST', '/timeouts', { script: 60_000, pageLoad: 30_000 });
    await session.command('POST', '/window/rect', { width, height });
    return session;
  } catch (err) {
    proc.kill('SIGKILL');
    err.message += `\n--- geckodriver log:\n${log.join('').slice(-4000)}`;
    throw err;
  }
}

/**
 * Give `origin` a lasting camera and microphone permission, as a person who ticked
 * "Remember this decision" would. Firefox gathers host candidates from every interface
 * only for a page that is capturing or holds that permission; otherwise it uses only the
 * "default address", the one with a route to the internet. Its fake devices do not count
 * as capturing, and the test namespace has no route anywhere, so without this Firefox
 * gathers no candidate at all (MOZ_LOG=nicer:5 says "use only default local addresses:
 * yes" and "failed to find default addresses"). Runs in the parent process.
 */
async function grantMedia(session, origin) {
  await session.command('POST', '/moz/context', { context: 'chrome' });
  try {
    await session.command('POST', '/execute/sync', {
      script: `const principal = Services.scriptSecurityManager.createContentPrincipalFromOrigin(arguments[0]);
        for (const type of ['camera', 'microphone']) Services.perms.addFromPrincipal(principal, type, Services.perms.ALLOW_ACTION);`,
      args: [origin],
    });
  } finally {
    await session.command('POST', '/moz/context', { context: 'content' });
  }
}

/** `fn` as a WebDriver script: called with the arguments, its promise awaited by the driver. */
function scriptOf(fn) {
  return `return (${fn.toString()}).apply(null, arguments);`;
}

/**
 * The part of Playwright's Page that browser.js's helpers use, over one WebDriver session.
 * Waits poll from here (every 50 ms) until a deadline, as Playwright's do.
 */
class FirefoxPage {
  #s;

  constructor(session) {
    this.#s = session;
  }

  async goto(url) {
    await this.#s.command('POST', '/url', { url });
  }

  async reload() {
    await this.#s.command('POST', '/refresh', {});
  }

  /** Run `fn(arg)` in the page; a returned promise is awaited (undefined comes back as null). */
  async evaluate(fn, arg) {
    const value = await this.#s.command('POST', '/execute/sync', { script: scriptOf(fn), args: arg === undefined ? [] : [arg] });
    return value;
  }

  /** Resolves with a handle whose jsonValue() is the first truthy value `fn(arg)` returned. */
  async waitForFunction(fn, arg, { timeout = 30_000 } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const value = await this.evaluate(fn, arg);
      if (value) return { jsonValue: async () => value };
      if (Date.now() > deadline) throw new Error(`waitForFunction timed out after ${timeout} ms: ${fn.toString().slice(0, 200)}`);
      await sleep(50);
    }
  }

  /**
   * Wait until `selector` is in the state Playwright's waitForSelector means: 'visible' (a
   * non-empty box, not visibility:hidden; the default), 'hidden' (absent or not visible),
   * 'attached' or 'detached'.
   */
  async waitForSelector(selector, { state = 'visible', timeout = 30_000 } = {}) {
    try {
      await this.waitForFunction(
        ([sel, want]) => {
          const el = document.querySelector(sel);
          const visible = !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
          return { visible, hidden: !visible, attached: !!el, detached: !el }[want];
        },
        [selector, state],
        { timeout },
      );
    } catch {
      throw new Error(`waitForSelector: ${selector} not ${state} within ${timeout} ms`);
    }
  }

  async #find(selector) {
    const found = await this.#s.command('POST', '/element', { using: 'css selector', value: selector });
    return found[ELEMENT];
  }

  /** An element command, tried again while the element is missing or not yet interactable. */
  async #onElement(selector, what, timeout, act) {
    const deadline = Date.now() + timeout;
    for (;;) {
      try {
        return await act(await this.#find(selector));
      } catch (err) {
        if (!RETRYABLE.has(err.code) || Date.now() > deadline) {
          throw new Error(`${what} ${selector}: ${err.message}`);
        }
      }
      await sleep(50);
    }
  }

  /** WebDriver's Element Click: scrolled into view, checked for being on top, real mouse events. */
  async click(selector, { timeout = 30_000 } = {}) {
    await this.#onElement(selector, 'click', timeout, (id) => this.#s.command('POST', `/element/${id}/click`, {}));
  }

  /** Clear the field, then type `text` into it (key events, as a person would). */
  async fill(selector, text, { timeout = 30_000 } = {}) {
    await this.#onElement(selector, 'fill', timeout, async (id) => {
      await this.#s.command('POST', `/element/${id}/clear`, {});
      if (text !== '') await this.#s.command('POST', `/element/${id}/value`, { text });
    });
  }

  async isEnabled(selector) {
    return this.#onElement(selector, 'isEnabled', 5_000, (id) => this.#s.command('GET', `/element/${id}/enabled`));
  }

  async textContent(selector) {
    return this.evaluate((sel) => document.querySelector(sel)?.textContent ?? null, selector);
  }

  async getAttribute(selector, name) {
    return this.evaluate(([sel, n]) => document.querySelector(sel)?.getAttribute(n) ?? null, [selector, name]);
  }

  /** The window (the viewport, headless) as a PNG, written to `path`. */
  async screenshot({ path }) {
    const base64 = await this.#s.command('GET', '/screenshot');
    writeFileSync(path, Buffer.from(base64, 'base64'));
  }
}

/**
 * A user in a Firefox of its own (own geckodriver, own profile), on `baseUrl/query`.
 * Close it with closeFirefoxUser.
 */
export async function openFirefoxUser(baseUrl, { query = '', width, height } = {}) {
  const session = await startSession({ width, height });
  const page = new FirefoxPage(session);
  await grantMedia(session, new URL(baseUrl).origin);
  await page.goto(`${baseUrl}/${query}`);
  return {
    page,
    session,
    browserName: 'firefox',
    browserVersion: session.capabilities?.browserVersion,
    /** Firefox's and geckodriver's output, the page's console among it. */
    get consoleLines() {
      return session.log.join('').split('\n');
    },
  };
}

export async function closeFirefoxUser(user) {
  await user?.session.close();
}

/** `geckodriver --version`'s first line. */
export async function geckodriverVersion() {
  return new Promise((ok) => {
    const proc = spawn(GECKODRIVER, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    proc.stdout.on('data', (c) => (out += c));
    proc.on('error', () => ok(null));
    proc.on('exit', () => ok(out.split('\n')[0].trim() || null));
  });
}
