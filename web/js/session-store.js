// What this tab must remember across a reload: who we are signed in as, the
// server's resume token for that login, and the call we are in. Kept in
// sessionStorage, which is per tab (a second tab signs in on its own) and
// survives a reload but not closing the tab. Storage may be missing or refuse
// writes (private modes, quota); then a reload simply shows the sign-in form.
//
// The saved session:
//   name         our name
//   token        the latest resumeToken, or null (a server with resume off gives none)
//   previousToken  the one before, or null: a server killed just after handing out
//                the latest may know only this one after its restart
//   call         the call we are in, or null:
//     peer         who with
//     answered     false while it still rings (a reload then cancels it)
//     role         'caller' or 'callee' of the attempt
//     since        Date.now() when media first flowed (the call timer goes on), or null
//     fingerprint  the DTLS fingerprint of the peer's connection before the reload: a
//                  description still carrying it belongs to that old connection

const KEY = 'duet.session';

export class SessionStore {
  #storage;

  /** @param {Storage | null | undefined} storage usually window.sessionStorage */
  constructor(storage) {
    this.#storage = storage ?? null;
  }

  /** The saved session, or null if there is none (or it is unreadable). */
  load() {
    let value;
    try {
      value = JSON.parse(this.#storage?.getItem(KEY) ?? 'null');
    } catch {
      return null;
    }
    if (!value || typeof value !== 'object' || typeof value.name !== 'string' || !value.name) return null;
    const call = value.call && typeof value.call.peer === 'string' && value.call.peer ? value.call : null;
    return {
      name: value.name,
      token: typeof value.token === 'string' ? value.token : null,
      previousToken: typeof value.previousToken === 'string' ? value.previousToken : null,
      call: call && {
        peer: call.peer,
        answered: call.answered === true,
        role: call.role === 'callee' ? 'callee' : 'caller',
        since: Number.isFinite(call.since) ? call.since : null,
        fingerprint: typeof call.fingerprint === 'string' ? call.fingerprint : null,
      },
    };
  }

  /** @param {{name: string, token: string | null, previousToken: string | null, call: object | null}} session */
  save(session) {
    try {
      this.#storage?.setItem(KEY, JSON.stringify(session));
    } catch {
      // Not kept: a reload will ask for the name again.
    }
  }

  clear() {
    try {
      this.#storage?.removeItem(KEY);
    } catch {
      // nothing kept anyway
    }
  }
}
