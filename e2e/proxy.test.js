// The README's reverse-proxy recipe, tested: nginx (Debian's) runs
// docs/nginx-duet.conf, changed only in ports and certificate paths, terminates
// TLS and forwards to duet on plain HTTP; two browsers call each other through it
// (page over https, signaling over wss through nginx's WebSocket upgrade).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DuetServer, freePort, repoRoot } from './lib/server.js';
import { acceptIncoming, closeUser, dial, launchBrowser, login, openUser, waitCallState } from './lib/browser.js';

// Node's fetch below talks only to the nginx this file started, with a test certificate.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

const haveNginx = spawnSync('sh', ['-c', 'command -v nginx && command -v openssl']).status === 0;

let dir;
let duet;
let nginx;
let nginxLog = [];
let proxyUrl;
let browser;

before(async () => {
  if (!haveNginx) return;
  dir = mkdtempSync(join(tmpdir(), 'duet-e2e-nginx-'));
  duet = await new DuetServer().start();
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const made = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert,
  ]);
  assert.equal(made.status, 0, `openssl: ${made.stderr}`);

  const port = await freePort();
  const site = readFileSync(resolve(repoRoot, 'docs', 'nginx-duet.conf'), 'utf8')
    .replace('listen 443 ssl http2;', `listen 127.0.0.1:${port} ssl http2;`)
    .replace(/^\s*listen \[::\]:443 .*$/m, '')
    .replace('/etc/letsencrypt/live/duet.example.org/fullchain.pem', cert)
    .replace('/etc/letsencrypt/live/duet.example.org/privkey.pem', key)
    .replace('http://127.0.0.1:9090', `http://127.0.0.1:${duet.port}`);
  writeFileSync(join(dir, 'duet.conf'), site);
  // The minimal main config around it: one foreground process as this user, every
  // path in the temporary directory.
  writeFileSync(
    join(dir, 'nginx.conf'),
    `daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/duet.conf;
}
`,
  );
  nginx = spawn('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (chunk) => nginxLog.push(chunk.toString());
  nginx.stdout.on('data', keep);
  nginx.stderr.on('data', keep);
  proxyUrl = `https://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await fetch(`${proxyUrl}/healthz`)).status === 200) break;
    } catch {}
    if (nginx.exitCode !== null || Date.now() > deadline) {
      throw new Error(`nginx did not come up:\n${nginxLog.join('')}\n${readFileSync(join(dir, 'error.log'), 'utf8')}`);
    }
    await sleep(50);
  }
  browser = await launchBrowser({ args: ['--ignore-certificate-errors'] });
});

after(async () => {
  await browser?.close();
  if (nginx && nginx.exitCode === null) {
    const exited = new Promise((ok) => nginx.once('exit', ok));
    nginx.kill('SIGTERM');
    await Promise.race([exited, sleep(3000)]);
  }
  await duet?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('call through nginx terminating TLS (docs/nginx-duet.conf)', { skip: !haveNginx && 'nginx or openssl missing' }, async (t) => {
  const alice = await login(await openUser(browser, proxyUrl), 'alice-proxy');
  const bob = await login(await openUser(browser, proxyUrl), 'bob-proxy');
  try {
    assert.equal(await alice.page.evaluate(() => window.isSecureContext), true);
    const t0 = Date.now();
    await dial(alice.page, bob.name);
    await acceptIncoming(bob.page, alice.name);
    await Promise.all([waitCallState(alice.page, 'connected', 20_000), waitCallState(bob.page, 'connected', 20_000)]);
    t.diagnostic(`call through nginx connected in ${Date.now() - t0} ms`);
    // duet saw the users through the proxy.
    assert.match(duet.log.join(''), /logged in.*alice-proxy/);
  } catch (err) {
    for (const u of [alice, bob]) console.log(`--- console of ${u.name}\n${u.consoleLines.join('\n')}`);
    console.log(`--- nginx\n${nginxLog.join('')}\n${readFileSync(join(dir, 'error.log'), 'utf8')}`);
    throw err;
  } finally {
    await closeUser(alice);
    await closeUser(bob);
  }
});
