// Sign-in before the name: asks the server (GET /auth/status) whether it wants the
// household password, and if so shows the password form and POSTs the password to
// /auth/password, which answers with an HttpOnly session cookie. Only then may the page
// open the WebSocket (without the cookie the server answers the upgrade with 401).
// DOM and fetch only; the call logic never sees the password.

/** What the server wants: {password, signedIn}. An old server without /auth: open. */
export async function authStatus(fetchFn = fetch) {
  try {
    const res = await fetchFn('auth/status', { cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) return { password: false, signedIn: false };
    const body = await res.json();
    return { password: body.password === true, signedIn: body.signedIn === true };
  } catch {
    return { password: false, signedIn: false };
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
  if (status.password && signOut) {
    signOut.hidden = false;
    signOut.addEventListener('click', async () => {
      await fetchFn('auth/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => {});
      doc.defaultView?.location.reload();
    });
  }
  if (!status.password || status.signedIn) return;
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
