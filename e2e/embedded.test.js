// The web client is built into the duet binary (rust-embed) and served at / and
// /<path>. These checks need no browser: they fetch every file of web/ from the
// binary and compare it with the copy on disk, so a stale binary is caught.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { DuetServer, repoRoot } from './lib/server.js';

const webDir = resolve(repoRoot, 'web');
let server;

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else yield path;
  }
}

before(async () => {
  const saved = process.env.DUET_WEB_DIR;
  delete process.env.DUET_WEB_DIR; // always the embedded copy here
  server = await new DuetServer().start();
  if (saved !== undefined) process.env.DUET_WEB_DIR = saved;
});

after(async () => {
  await server?.stop();
});

test('/ serves index.html with the element ids the client needs', async () => {
  const res = await fetch(`${server.baseUrl}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/html/);
  const html = await res.text();
  for (const id of ['loginPage', 'usernameInput', 'loginBtn', 'callPage', 'localVideo', 'remoteVideo',
    'callToUsernameInput', 'callBtn', 'hangUpBtn', 'acceptBtn', 'declineBtn', 'muteBtn', 'cameraBtn',
    'callStatus', 'userList', 'stats']) {
    assert.ok(html.includes(`id="${id}"`), `index.html lacks #${id}`);
  }
  // Nothing from the internet: no CDN, no web fonts.
  assert.doesNotMatch(html, /https?:\/\//);
});

test('every file in web/ is served byte for byte by the binary', async () => {
  for (const path of files(webDir)) {
    const rel = relative(webDir, path).split('\\').join('/');
    const res = await fetch(`${server.baseUrl}/${rel}`);
    assert.equal(res.status, 200, `/${rel}`);
    const body = Buffer.from(await res.arrayBuffer());
    assert.ok(
      body.equals(readFileSync(path)),
      `/${rel} differs from web/${rel}: the binary is stale, rebuild with 'cargo build --release'`,
    );
    if (rel.endsWith('.js')) assert.match(res.headers.get('content-type'), /javascript/, `/${rel} content-type`);
    if (rel.endsWith('.css')) assert.match(res.headers.get('content-type'), /text\/css/, `/${rel} content-type`);
  }
});

test('no file of the client loads anything from another host', () => {
  for (const path of files(webDir)) {
    const text = readFileSync(path, 'utf8');
    assert.doesNotMatch(text, /(?:src|href)\s*=\s*["']https?:|@import\s+url\(["']?https?:|fonts\.googleapis/,
      `${relative(webDir, path)} refers to another host`);
  }
});
