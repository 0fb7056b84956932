// Sign-in before the name: asks the server (GET /auth/status) whether it wants the
// household password or an OpenID provider. For the password it shows the password form
// and POSTs the password to /auth/password, which answers with an HttpOnly session
// cookie; for a provider it shows "Sign in with <provider>" (#oidcLoginBtn), which goes
// to /auth/oidc/login and comes back signed in. Only then may the page open the
// WebSocket (without the cookie the server answers the upgrade with 401); an OpenID
// session's socket is logged in at once under the provider's name.
// DOM and fetch only; the call logic never sees the password.

const OPEN = { password: false, oidc: null, signedIn: false, name: null };

/**
 * What the server wants: {password, oidc: null|{provider}, signedIn, name}. An old server
 * without /auth: open.
 */
export async function authStatus(fetchFn = fetch) {
  try {
    const res = await fetchFn('auth/status', { cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) return { ...OPEN };
    const body = await res.json();
    const provider = typeof body.oidc?.provider === 'string' ? body.oidc.provider : null;
    return {
      password: body.password === true,
      oidc: provider === null ? null : { provider },
      signedIn: body.signedIn === true,
      name: typeof body.name === 'string' ? body.name : null,
    };
  } catch {
    return { ...OPEN };
  }
}

/** The text to show for a refused password POST. */
export function describePasswordRefusal(status, body) {
  if (status === 429) return body?.message || 'Too many attempts; wait a few seconds and try again.';
  if (status === 401) return 'That is not the password; try again.';
  return body?.message || `The server refused the sign-in (HTTP ${status}).`;
}

/**
 * Resolves once the page may open the WebSocket: at once when the server is open or the
 * session cookie is valid, else after the password was accepted.
 */
export async function signInGate(doc = document, fetchFn = fetch) {
  const status = await authStatus(fetchFn);
  const signOut = doc.getElementById('signOutBtn');
  if ((status.password || status.oidc) && signOut) {
    signOut.hidden = false;
    signOut.addEventListener('click', async () => {
      await fetchFn('auth/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => {});
      doc.defaultView?.location.reload();
    });
  }
  if (status.signedIn) {
    // An OpenID session: the server logs the socket in under its name; no name to type.
    if (status.name !== null) doc.getElementById('loginForm').hidden = true;
    return;
  }
  if (status.oidc) showProvider(doc, status.oidc.provider);
  if (!status.password) {
    // Only the provider signs in here: the button leaves the page, nothing to resolve.
    if (status.oidc) return new Promise(() => {});
    return;
  }
  const form = doc.getElementById('passwordForm');
  const input = doc.getElementById('passwordInput');
  const button = doc.getElementById('passwordBtn');
  const shown = doc.getElementById('passwordStatus');
  const nameForm = doc.getElementById('loginForm');
  nameForm.hidden = true;
  form.hidden = false;
  input.focus();
  await new Promise((done) => {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      button.disabled = true;
      shown.textContent = 'Checking…';
      try {
        const res = await fetchFn('auth/password', {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ password: input.value }),
        });
        if (res.ok) {
          input.value = '';
          shown.textContent = '';
          form.hidden = true;
          nameForm.hidden = false;
          done();
          return;
        }
        const body = await res.json().catch(() => null);
        shown.textContent = describePasswordRefusal(res.status, body);
      } catch (err) {
        shown.textContent = `Cannot reach the server: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    });
  });
}

/** Shows "Sign in with <provider>" in place of the name form. */
function showProvider(doc, provider) {
  const form = doc.getElementById('oidcForm');
  const button = doc.getElementById('oidcLoginBtn');
  doc.getElementById('loginForm').hidden = true;
  if (!form || !button) return;
  button.textContent = `Sign in with ${provider}`;
  form.hidden = false;
  button.addEventListener('click', () => {
    button.disabled = true;
    doc.defaultView?.location.assign('auth/oidc/login');
  });
}
