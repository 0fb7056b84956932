// Debian's chromium driven by playwright-core (no downloaded browser), with
// fake camera/microphone, and helpers to act as one user per browser context.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { repoRoot } from './server.js';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const artifactsDir = resolve(repoRoot, 'e2e', 'artifacts');

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
  // Chromium hides host candidates behind mDNS names; nothing answers mDNS inside the
  // loopback-only namespace, which adds ~1.8 s to every direct call (measured: 2.06 s
  // to first frame with it, 0.25 s without). Real LANs resolve them.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/**
 * @param {{args?: string[], executablePath?: string, askForMedia?: boolean}} [options] extra Chromium flags (e.g.
 *   --ignore-certificate-errors); another executable (the network lab's, or
 *   NetNs.chromiumWrapper, which run Chromium inside a namespace)
 */
export async function launchBrowser({ args = [], executablePath = CHROMIUM, askForMedia = false } = {}) {
  // askForMedia: camera and microphone need the context's permission (grantPermissions),
  // as for a user who has not allowed them yet; without it getUserMedia is refused.
  const base = askForMedia ? CHROMIUM_ARGS.filter((a) => a !== '--use-fake-ui-for-media-stream') : CHROMIUM_ARGS;
  return chromium.launch({ executablePath, headless: true, args: [...base, ...args] });
}

/**
 * The selected candidate pair of the page's peer connection, from getStats: its state,
 * both candidates' types, the local one's relay protocol (udp/tcp/tls for a relay
 * candidate), or null while none is selected.
 */
export function selectedPair(page) {
  return page.evaluate(async () => {
    const pc = window.duet.state.pc;
    if (!pc) return null;
    const stats = new Map();
    for (const s of (await pc.getStats()).values()) stats.set(s.id, s);
    let pair = null;
    for (const s of stats.values()) {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    }
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      state: pair.state,
      local: local?.candidateType,
      localProtocol: local?.relayProtocol ?? local?.protocol,
      localAddress: `${local?.address}:${local?.port}`,
      remote: remote?.candidateType,
      remoteAddress: `${remote?.address}:${remote?.port}`,
      bytesSent: pair.bytesSent,
      bytesReceived: pair.bytesReceived,
    };
  });
}

/**
 * A user: its own browser context (own cookies, own fake camera) and page.
 * Console errors of the page are collected for failure messages.
 */
export async function openUser(browser, baseUrl, { query = '', viewport, noMedia = false } = {}) {
  const context = await browser.newContext({ viewport: viewport ?? { width: 1000, height: 900 } });
  const page = await context.newPage();
  if (noMedia) {
    // A machine with no camera or microphone: every getUserMedia fails.
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = async () => {
        throw new DOMException('Requested device not found', 'NotFoundError');
      };
    });
  }
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('dialog', async (d) => {
    // The page asks before a reload or close ends a call; the tests mean to leave.
    if (d.type() === 'beforeunload') return d.accept();
    consoleLines.push(`dialog: ${d.message()}`);
    await d.dismiss();
  });
  await page.goto(`${baseUrl}/${query}`);
  return { context, page, consoleLines };
}

/** Log in through the page and wait for the call page. */
export async function login(user, name, { expectMedia = true } = {}) {
  const { page } = user;
  await page.waitForFunction(() => window.duet?.state.signaling === 'open');
  await page.fill('#usernameInput', name);
  await page.click('#loginBtn');
  await page.waitForSelector('#callPage:not([hidden])');
  // Local media is opened right after login; wait for the preview.
  if (expectMedia) {
    await page.waitForFunction(() => {
      const v = document.querySelector('#localVideo');
      return v.srcObject && v.videoWidth > 0;
    });
  }
  user.name = name;
  return user;
}

export function state(page) {
  return page.evaluate(() => {
    const s = window.duet.state;
    return { name: s.name, call: s.call, peer: s.peer, signaling: s.signaling, users: s.users, hasPc: !!s.pc };
  });
}

export async function waitCallState(page, want, timeout = 15_000) {
  await page.waitForFunction((w) => window.duet.state.call === w, want, { timeout });
}

export async function statusText(page) {
  return (await page.textContent('#callStatus')) ?? '';
}

/** Wait until #callStatus matches `re` (a RegExp source, case-insensitive). */
export async function waitStatus(page, re, timeout = 15_000) {
  try {
    await page.waitForFunction(
      (src) => new RegExp(src, 'i').test(document.querySelector('#callStatus').textContent),
      re.source ?? re,
      { timeout },
    );
  } catch (err) {
    throw new Error(`#callStatus never matched ${re}; it says: "${await statusText(page)}"`);
  }
}

/** Inbound video stats of the page's current peer connection. */
export function inboundVideo(page) {
  return page.evaluate(async () => {
    const pc = window.duet.state.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    for (const s of report.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        return { framesDecoded: s.framesDecoded ?? 0, width: s.frameWidth ?? 0, bytes: s.bytesReceived ?? 0 };
      }
    }
    return { framesDecoded: 0, width: 0, bytes: 0 };
  });
}

/** Wait until the remote video decodes frames; resolves with Date.now() at that point. */
export async function waitFirstFrame(page, timeout = 20_000) {
  // Polled from here, not with page.waitForFunction: that treats the Promise an async
  // predicate returns as truthy and resolves at once.
  const deadline = Date.now() + timeout;
  for (;;) {
    const decoded = await page.evaluate(async () => {
      const pc = window.duet.state.pc;
      if (!pc) return false;
      const report = await pc.getStats();
      for (const s of report.values()) {
        if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) return true;
      }
      return false;
    });
    if (decoded) return Date.now();
    if (Date.now() > deadline) throw new Error(`no decoded remote video frame within ${timeout} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The remote <video> element is playing: has a size and its time advances. */
export async function assertRemoteVideoPlays(page) {
  const first = await page.waitForFunction(
    () => {
      const v = document.querySelector('#remoteVideo');
      return v.srcObject && v.videoWidth > 0 && v.currentTime > 0 ? { w: v.videoWidth, h: v.videoHeight, t: v.currentTime } : false;
    },
    null,
    { timeout: 20_000 },
  );
  const start = await first.jsonValue();
  await page.waitForFunction(
    (t0) => document.querySelector('#remoteVideo').currentTime > t0 + 0.3,
    start.t,
    { timeout: 10_000 },
  );
  return start;
}

export function screenshotPath(name) {
  mkdirSync(artifactsDir, { recursive: true });
  return resolve(artifactsDir, name);
}

/** Type a name and press Call. */
export async function dial(page, name) {
  await page.fill('#callToUsernameInput', name);
  await page.click('#callBtn');
}

/** Wait for the incoming-call panel and press Accept. */
export async function acceptIncoming(page, from) {
  await page.waitForSelector('#incomingPanel:not([hidden])');
  const text = await page.textContent('#incomingText');
  if (from && text !== `${from} is calling`) throw new Error(`incoming text is "${text}"`);
  await page.click('#acceptBtn');
}

/**
 * Mean brightness (0..255) of the remote video, drawn to a canvas: the fake
 * camera is a bright test pattern, a disabled track sends black frames.
 */
export function remoteBrightness(page) {
  return page.evaluate(() => {
    const v = document.querySelector('#remoteVideo');
    if (!v.videoWidth) return 0;
    const c = document.createElement('canvas');
    c.width = 64;
    c.height = 48;
    const g = c.getContext('2d', { willReadFrequently: true });
    g.drawImage(v, 0, 0, c.width, c.height);
    const { data } = g.getImageData(0, 0, c.width, c.height);
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) sum += (data[i] + data[i + 1] + data[i + 2]) / 3;
    return sum / (data.length / 4);
  });
}

/** Total audio energy received so far (grows while the peer's mic is on). */
export function inboundAudioEnergy(page) {
  return page.evaluate(async () => {
    const pc = window.duet.state.pc;
    if (!pc) return null;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') return s.totalAudioEnergy ?? 0;
    }
    return 0;
  });
}

/** enabled flags of the tracks our peer connection sends. */
export function sentTracks(page) {
  return page.evaluate(() => {
    const out = {};
    for (const sender of window.duet.state.pc?.getSenders() ?? []) {
      if (sender.track) out[sender.track.kind] = sender.track.enabled;
    }
    return out;
  });
}

/**
 * Record, every 100 ms from now on and across reloads of the page, the remote video's
 * decoded frame count of the page's current peer connection, with the call state and the
 * status line: window.__frameLog = [{t: Date.now(), pc: id of the connection (1, 2, ...),
 * n, call, status}].
 * Read it with frameLog(page).
 */
export async function startFrameLog(page) {
  const install = () => {
    if (window.__frameLogStarted) return;
    window.__frameLogStarted = true;
    window.__frameLog = [];
    const ids = new WeakMap();
    let next = 1;
    setInterval(async () => {
      const s = window.duet?.state;
      if (!s) return;
      let n = null;
      let pcId = null;
      if (s.pc) {
        if (!ids.has(s.pc)) ids.set(s.pc, next++);
        pcId = ids.get(s.pc);
        try {
          for (const r of (await s.pc.getStats()).values()) {
            if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded ?? 0;
          }
        } catch {
          n = null;
        }
      }
      const status = document.querySelector('#callStatus')?.textContent ?? '';
      window.__frameLog.push({ t: Date.now(), pc: pcId, n, call: s.call, status });
      if (window.__frameLog.length > 3000) window.__frameLog.splice(0, 1000);
    }, 100);
  };
  await page.addInitScript(install);
  await page.evaluate(install);
}

/**
 * In a frame log, the first time after `t0` that decoding resumed after a stall of at
 * least `stallMs` (no frame decoded on the current connection): {stalledAt, resumedAt}
 * (Date.now() values), or null if it has not (yet).
 */
export function resumedAfterStall(log, t0, stallMs = 1000) {
  let lastGrowth = null;
  let prev = null;
  for (const e of log) {
    if (e.n === null) continue;
    lastGrowth ??= e.t;
    if (prev !== null && e.pc === prev.pc && e.n > prev.n) {
      if (e.t > t0 && e.t - lastGrowth >= stallMs) return { stalledAt: lastGrowth, resumedAt: e.t };
      lastGrowth = e.t;
    }
    prev = e;
  }
  return null;
}

/** The samples startFrameLog has taken since the page was last (re)loaded. */
export function frameLog(page) {
  return page.evaluate(() => window.__frameLog ?? []);
}

/**
 * Wait until the remote video decodes `frames` more frames on one connection (the
 * current one), from samples taken after `sinceMs` (Date.now()); resolves with the time
 * (Date.now()) of the first sample in which that connection's count had grown.
 */
export async function waitFramesGrow(page, { sinceMs = Date.now(), frames = 10, timeout = 20_000 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const log = (await frameLog(page)).filter((e) => e.t >= sinceMs && e.n !== null);
    const first = new Map();
    const grewAt = new Map();
    for (const e of log) {
      if (!first.has(e.pc)) first.set(e.pc, e.n);
      else if (e.n > first.get(e.pc) && !grewAt.has(e.pc)) grewAt.set(e.pc, e.t);
      if (e.n - first.get(e.pc) >= frames) return grewAt.get(e.pc);
    }
    if (Date.now() > deadline) {
      throw new Error(`remote video did not decode ${frames} more frames within ${timeout} ms; last samples: ${JSON.stringify(log.slice(-5))}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function closeUser(user) {
  await user?.context.close().catch(() => {});
}
