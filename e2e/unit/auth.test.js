// auth.js's reading of GET /auth/status: what the page offers (password, provider) and
// whether an OpenID session already names the user.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { authStatus } from '../../web/js/auth.js';

const answering = (status, body) => async () => ({ ok: status === 200, status, json: async () => body });

test('a provider and an OpenID session are read from the status', async () => {
  const s = await authStatus(answering(200, { password: false, oidc: { provider: 'Keycloak' }, signedIn: true, name: 'alice' }));
  assert.deepEqual(s, { password: false, oidc: { provider: 'Keycloak' }, signedIn: true, name: 'alice' });
});

test('a password session names nobody; odd values count as absent', async () => {
  const s = await authStatus(answering(200, { password: true, oidc: { provider: 7 }, signedIn: true, name: null }));
  assert.deepEqual(s, { password: true, oidc: null, signedIn: true, name: null });
});

test('an old server without /auth, or none at all, is open', async () => {
  const open = { password: false, oidc: null, signedIn: false, name: null };
  assert.deepEqual(await authStatus(answering(404, null)), open);
  assert.deepEqual(await authStatus(async () => { throw new Error('offline'); }), open);
});
