// Browser calls across the network lab (netlab.sh): one Chromium in each home, duet on the
// "internet" at 203.0.113.10 with HTTPS on 443 and its embedded STUN/TURN. Each call checks
// media both ways (decoded frames) and the selected candidate pair's types, and reports
// the time from pressing Call to the first remote frame on each side.
//
// Run through the lab (scripts/test does):
//   e2e/netlab/netlab.sh node --test --test-concurrency=1 e2e/netlab/calls.test.js

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DuetServer } from '../lib/server.js';
import {
  acceptIncoming,
  closeUser,
  dial,
  launchBrowser,
  login,
  openUser,
  selectedPair,
  statusText,
  waitCallState,
  waitFirstFrame,
  waitStatus,
} from '../lib/browser.js';

const LAB = process.env.NETLAB_DIR;
const IP = process.env.NETLAB_DUET_IP;
if (!LAB || !IP) throw new Error('run this through e2e/netlab/netlab.sh (see the header)');

// The harness polls /healthz with Node's fetch over https with duet's self-signed
// certificate; this process talks only to the duet it started.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

let dataDir;
before(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'duet-netlab-'));
});
after(() => {
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** duet on the internet: HTTPS on 443, and `turn` flags. */
async function startDuet(turnArgs) {
  return new DuetServer({
    host: IP,
    port: 443,
    https: true,
    args: ['--tls-self-signed', '--data-dir', dataDir, ...turnArgs],
  }).start();
}

/** The embedded TURN server on the internet address, which also answers STUN. */
const EMBEDDED_TURN = [
  '--turn-server',
  '--turn-listen', `${IP}:3478`,
  '--turn-external-ip', IP,
  '--stun', `stun:${IP}:3478`,
];

/** A Chromium inside `home`, trusting duet's certificate as a user who accepted it. */
function homeBrowser(home) {
  return launchBrowser({ executablePath: join(LAB, `chromium-${home}`), args: ['--ignore-certificate-errors'] });
}

/**
 * The selected pair once its check has settled (media can flow a moment before) and, if
 * `want` is given, once it satisfies `want` or 15 s have passed. Chromium starts media on
 * the first pair that works, often a relayed one, and moves to a better one (a direct
 * pair found by hole punching) when its checks succeed.
 */
async function settledPair(page, want = () => true) {
  let pair = await selectedPair(page);
  for (const deadline = Date.now() + 15_000; !(pair?.state === 'succeeded' && want(pair)) && Date.now() < deadline; ) {
    await sleep(100);
    pair = await selectedPair(page);
  }
  return pair;
}

/** Every candidate pair the page's ICE agent tried, for failure messages. */
function allPairs(page) {
  return page.evaluate(async () => {
    const pc = window.duet.state.pc;
    if (!pc) return [];
    const stats = new Map();
    for (const s of (await pc.getStats()).values()) stats.set(s.id, s);
    const name = (c) => `${c?.candidateType}/${c?.relayProtocol ?? c?.protocol} ${c?.address}:${c?.port}`;
    return [...stats.values()]
      .filter((s) => s.type === 'candidate-pair')
      .map((p) => `${p.state}${p.nominated ? ' nominated' : ''}: ${name(stats.get(p.localCandidateId))} -> ${name(stats.get(p.remoteCandidateId))} (req ${p.requestsSent}, resp ${p.responsesReceived})`);
  });
}

const timings = [];

/**
 * A call from a user in `fromHome` to one in `toHome` on `server`. Resolves with both
 * sides' selected pairs and times once both decode remote video; throws if they do not
 * within `timeout`.
 */
async function call(server, fromHome, toHome, { timeout = 30_000, expectFrames = true, want } = {}) {
  const [ba, bb] = await Promise.all([homeBrowser(fromHome), homeBrowser(toHome)]);
  const tag = randomBytes(3).toString('hex');
  let alice;
  let bob;
  try {
    alice = await login(await openUser(ba, server.baseUrl), `a-${fromHome}-${tag}`);
    bob = await login(await openUser(bb, server.baseUrl), `b-${toHome}-${tag}`);
    const t0 = Date.now();
    await dial(alice.page, bob.name);
    await acceptIncoming(bob.page, alice.name);
    if (!expectFrames) return { alice, bob, t0, browsers: [ba, bb] };
    const [fa, fb] = await Promise.all([waitFirstFrame(alice.page, timeout), waitFirstFrame(bob.page, timeout)]);
    const pairs = { caller: await settledPair(alice.page, want), callee: await settledPair(bob.page, want) };
    for (const [who, pair] of Object.entries(pairs)) {
      assert.ok(pair, `${who}: no selected candidate pair`);
      assert.equal(pair.state, 'succeeded', `${who}: ${JSON.stringify(pair)}`);
    }
    return { pairs, callerMs: fa - t0, calleeMs: fb - t0 };
  } catch (err) {
    for (const u of [alice, bob]) if (u) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
    for (const u of [alice, bob]) if (u) console.log(`--- candidate pairs of ${u.name}\n${(await allPairs(u.page).catch(() => [])).join('\n')}`);
    console.log(`--- duet log\n${server.log.join('').slice(-20_000)}`);
    throw err;
  } finally {
    if (expectFrames) {
      await closeUser(alice);
      await closeUser(bob);
      await Promise.all([ba.close(), bb.close()]);
    }
  }
}

function report(t, topology, result) {
  const { caller, callee } = result.pairs;
  const line =
    `${topology}: caller ${caller.local}/${caller.localProtocol} -> ${caller.remote}, ` +
    `callee ${callee.local}/${callee.localProtocol} -> ${callee.remote}; ` +
    `call -> first frame: caller ${result.callerMs} ms, callee ${result.calleeMs} ms`;
  t.diagnostic(line);
  console.log(`TIMING netlab ${line}`);
  timings.push(line);
}

test('endpoint-independent NAT <-> endpoint-independent NAT: direct, through STUN', async (t) => {
  const server = await startDuet(EMBEDDED_TURN);
  try {
    const direct = (p) => p.local !== 'relay' && p.remote !== 'relay';
    const result = await call(server, 'eim1', 'eim2', { want: direct });
    report(t, 'EIM NAT <-> EIM NAT', result);
    for (const [who, pair] of Object.entries(result.pairs)) {
      assert.ok(['srflx', 'prflx'].includes(pair.local), `${who}: ${JSON.stringify(pair)}`);
      assert.ok(['srflx', 'prflx'].includes(pair.remote), `${who}: ${JSON.stringify(pair)}`);
    }
  } finally {
    await server.stop();
  }
});

test('symmetric NAT <-> symmetric NAT: through the embedded TURN over UDP', async (t) => {
  const server = await startDuet(EMBEDDED_TURN);
  try {
    const result = await call(server, 'sym1', 'sym2', { want: (p) => p.local === 'relay' || p.remote === 'relay' });
    report(t, 'symmetric NAT <-> symmetric NAT', result);
    const { caller, callee } = result.pairs;
    // One relay is enough (a permission is per IP address, so the far side's NAT may
    // use any port); each side sees it either as its own candidate or the peer's.
    const relayed = [caller, callee].filter((p) => p.local === 'relay');
    assert.ok(relayed.length > 0, `no side relays: ${JSON.stringify(result.pairs)}`);
    for (const p of relayed) assert.equal(p.localProtocol, 'udp', JSON.stringify(p));
    assert.ok(caller.local === 'relay' || caller.remote === 'relay', JSON.stringify(caller));
    assert.ok(callee.local === 'relay' || callee.remote === 'relay', JSON.stringify(callee));
  } finally {
    await server.stop();
  }
});

test('UDP-blocked network <-> home: through TURN over TLS on port 443', async (t) => {
  const server = await startDuet(EMBEDDED_TURN);
  try {
    const result = await call(server, 'block', 'eim1');
    report(t, 'UDP blocked, TCP 443 only <-> EIM NAT (turns: on 443)', result);
    const blocked = result.pairs.caller;
    assert.equal(blocked.local, 'relay', JSON.stringify(blocked));
    assert.equal(blocked.localProtocol, 'tls', JSON.stringify(blocked));
  } finally {
    await server.stop();
  }
});

test('UDP-blocked network <-> home: through TURN over TCP on port 443', async (t) => {
  // No turns: URL this time, TURN over plain TCP on the HTTPS port instead.
  const secret = randomBytes(16).toString('hex');
  const server = await startDuet([
    ...EMBEDDED_TURN,
    '--turn-secret', secret,
    '--turn', `turn:${IP}:3478?transport=udp`,
    '--turn', `turn:${IP}:443?transport=tcp`,
  ]);
  try {
    const result = await call(server, 'block', 'eim1');
    report(t, 'UDP blocked, TCP 443 only <-> EIM NAT (turn: over TCP on 443)', result);
    const blocked = result.pairs.caller;
    assert.equal(blocked.local, 'relay', JSON.stringify(blocked));
    assert.equal(blocked.localProtocol, 'tcp', JSON.stringify(blocked));
  } finally {
    await server.stop();
  }
});

/**
 * A call from `fromHome` to `toHome` on `server` that cannot connect: the caller's page
 * must end the attempt with a message matching `expect` within the connect timeout
 * (20 s, web/js/app.js) plus slack. Returns the time from Call to the message.
 */
async function failingCall(server, fromHome, toHome, expect) {
  const c = await call(server, fromHome, toHome, { expectFrames: false });
  try {
    await waitStatus(c.alice.page, expect, 30_000);
    const ms = Date.now() - c.t0;
    assert.equal(await selectedPair(c.alice.page), null, 'a candidate pair was selected');
    // Both attempts are over: the caller's ended, the callee was told.
    await waitCallState(c.alice.page, 'idle', 5000);
    await waitCallState(c.bob.page, 'idle', 15_000);
    return { ms, text: await statusText(c.alice.page), callee: await statusText(c.bob.page) };
  } catch (err) {
    for (const u of [c.alice, c.bob]) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
    console.log(`--- duet log\n${server.log.join('').slice(-20_000)}`);
    throw err;
  } finally {
    await closeUser(c.alice);
    await closeUser(c.bob);
    await Promise.all(c.browsers.map((b) => b.close()));
  }
}

// The two calls that cannot connect wait out the page's connect timeout; they run side
// by side (their duets on different ports) so the lab waits for it once.
test('calls that cannot connect end with the reason', { concurrency: 2 }, async (t) => {
  await Promise.all([
    t.test('UDP-blocked network <-> home without TURN: "no network path"', async (t) => {
      const server = await startDuet([]);
      try {
        const r = await failingCall(server, 'block', 'eim1', /no network path to b-eim1-\w+: .*no TURN relay configured/i);
        t.diagnostic(`no TURN: "${r.text}" after ${r.ms} ms; callee: "${r.callee}"`);
        console.log(`TIMING netlab UDP blocked <-> EIM NAT, no TURN: call -> "no network path" ${r.ms} ms`);
        timings.push(`UDP blocked <-> EIM NAT, no TURN: no path, message after ${r.ms} ms`);
      } finally {
        await server.stop();
      }
    }),
    t.test('a TURN server that refuses the credentials: the refusal is shown', async (t) => {
      // duet's TURN server checks another secret than the page's duet mints with; behind
      // symmetric NATs only a relay could connect the call.
      const turn = await new DuetServer({
        host: IP,
        port: 8478,
        args: ['--turn-server', '--turn-listen', `${IP}:3478`, '--turn-external-ip', IP, '--turn-secret', 'the-turn-servers'],
      }).start();
      const server = await new DuetServer({
        host: IP,
        port: 8443,
        https: true,
        args: ['--tls-self-signed', '--data-dir', dataDir, '--turn', `turn:${IP}:3478?transport=udp`, '--turn-secret', 'another'],
      }).start();
      try {
        const r = await failingCall(server, 'sym1', 'sym2', /TURN server refused to relay \(401 .*wrong or expired TURN credentials/);
        t.diagnostic(`refused: "${r.text}" after ${r.ms} ms; callee: "${r.callee}"`);
        console.log(`TIMING netlab symmetric NAT <-> symmetric NAT, TURN refusing: call -> refusal message ${r.ms} ms`);
        timings.push(`symmetric NAT <-> symmetric NAT, TURN refusing the credentials: refusal shown after ${r.ms} ms`);
        // The refusals are the TURN server's routine: logged below ERROR.
        assert.doesNotMatch(turn.log.join(''), /\bERROR\b/, turn.log.join(''));
      } finally {
        await server.stop();
        await turn.stop();
      }
    }),
  ]);
});

after(() => {
  if (timings.length) console.log(`netlab timings:\n${timings.join('\n')}`);
});
