// Ringing like a phone: a ringtone for an incoming call and a ringback tone while the
// peer's phone rings, both made with Web Audio (no audio file to fetch); while it rings
// in, the title and favicon change, phones vibrate and, when the page is hidden, a
// system notification says who calls. One Ringing per page; the controller says when.
//
// Browsers start an AudioContext suspended until a user gesture: `unlock()` runs at one
// (sign-in) and also asks for the notification permission there.

/** The ringtone: two short 880/660 Hz bursts, every 3 s. */
const RINGTONE = { period: 3, bursts: [[0, 0.4, [880, 660]], [0.6, 0.4, [880, 660]]], gain: 0.25 };
/** The ringback: 440+480 Hz, 2 s on, 4 s off (the North American pattern). */
const RINGBACK = { period: 6, bursts: [[0, 2, [440, 480]]], gain: 0.1 };
const VIBRATE = [400, 200, 400];
const ICON = 'icon.svg';
const RINGING_ICON =
  "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 64 64'%3E%3Crect width='64' height='64' rx='14' fill='%2315803d'/%3E%3Cpath fill='%23fff' d='M20 27a26 26 0 0 0 17 17l5-5a2 2 0 0 1 2-1c2 1 4 1 6 1a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2A36 36 0 0 1 14 14a2 2 0 0 1 2-2h8a2 2 0 0 1 2 2c0 2 0 4 1 6a2 2 0 0 1-1 2z'/%3E%3C/svg%3E";

export class Ringing {
  #win;
  #doc;
  #ctx = null;
  #timer = null;
  /** Oscillators of the tone now playing (each burst makes its own). */
  #live = new Set();
  #tone = null;
  #notification = null;
  #title = null;
  /** For tests and debugging (window.duet.state.ringing). */
  #notices = { shown: 0, lastTitle: null, lastError: null };

  /** Who rings us now, or null. */
  #caller = null;

  constructor(win = globalThis.window) {
    this.#win = win;
    this.#doc = win?.document ?? null;
    // A call that started ringing while the page was in view, and the page is then hidden.
    this.#doc?.addEventListener('visibilitychange', () => {
      if (this.#caller !== null && this.#notification === null && this.#doc.visibilityState === 'hidden') this.#notify(this.#caller);
    });
  }

  /** At a user gesture: let audio start, and ask once whether we may notify. */
  unlock() {
    try {
      this.#ctx ??= new this.#win.AudioContext();
      if (this.#ctx.state === 'suspended') this.#ctx.resume().catch(() => {});
    } catch {
      this.#ctx = null;
    }
    const N = this.#win?.Notification;
    if (N && N.permission === 'default') N.requestPermission().catch(() => {});
  }

  /** What rings now, for tests: {tone, audio: the AudioContext's state, oscillators, notifications}. */
  get state() {
    return Object.freeze({
      tone: this.#tone,
      audio: this.#ctx?.state ?? 'none',
      oscillators: this.#live.size,
      notificationsShown: this.#notices.shown,
      notificationTitle: this.#notices.lastTitle,
      notificationError: this.#notices.lastError,
    });
  }

  /** `peer` calls us: ringtone, vibration, title, favicon, and a notification if hidden. */
  incoming(peer) {
    this.#play('ringtone', RINGTONE, () => this.#win.navigator?.vibrate?.(VIBRATE));
    this.#caller = peer;
    this.#setTitle(`${peer} is calling – duet`, RINGING_ICON);
    if (this.#doc?.visibilityState === 'hidden') this.#notify(peer);
  }

  /** The peer's phone rings (the server said `ringing`). */
  ringback() {
    this.#play('ringback', RINGBACK);
  }

  /** Answered, declined or over: silence, and the page looks as before. */
  stop() {
    clearInterval(this.#timer);
    this.#timer = null;
    this.#tone = null;
    this.#caller = null;
    for (const osc of this.#live) {
      try {
        osc.stop();
      } catch {
        // already stopped
      }
    }
    this.#live.clear();
    this.#win?.navigator?.vibrate?.(0);
    this.#notification?.close();
    this.#notification = null;
    if (this.#title !== null) this.#setTitle(null, ICON);
  }

  #play(tone, pattern, each = () => {}) {
    if (this.#tone === tone) return;
    this.stop();
    this.#tone = tone;
    const ring = () => {
      each();
      this.#burst(pattern);
    };
    ring();
    this.#timer = setInterval(ring, pattern.period * 1000);
  }

  /** One period of the pattern, scheduled on the audio clock. */
  #burst(pattern) {
    const ctx = this.#ctx;
    if (!ctx || ctx.state === 'closed') return;
    if (ctx.state === 'suspended') ctx.resume().catch(() => {});
    const t0 = ctx.currentTime + 0.05;
    for (const [at, length, freqs] of pattern.bursts) {
      const gain = ctx.createGain();
      gain.gain.setValueAtTime(0, t0 + at);
      gain.gain.linearRampToValueAtTime(pattern.gain / freqs.length, t0 + at + 0.02);
      gain.gain.setValueAtTime(pattern.gain / freqs.length, t0 + at + length - 0.03);
      gain.gain.linearRampToValueAtTime(0, t0 + at + length);
      gain.connect(ctx.destination);
      for (const freq of freqs) {
        const osc = ctx.createOscillator();
        osc.frequency.value = freq;
        osc.connect(gain);
        osc.start(t0 + at);
        osc.stop(t0 + at + length);
        this.#live.add(osc);
        osc.onended = () => {
          this.#live.delete(osc);
          osc.disconnect();
          if (this.#live.size === 0) gain.disconnect();
        };
      }
    }
  }

  #setTitle(text, icon) {
    const doc = this.#doc;
    if (!doc) return;
    if (text !== null) {
      this.#title ??= doc.title;
      doc.title = text;
    } else {
      doc.title = this.#title ?? doc.title;
      this.#title = null;
    }
    const link = doc.getElementById('favicon');
    if (link) link.href = icon;
  }

  #notify(peer) {
    const N = this.#win?.Notification;
    if (!N || N.permission !== 'granted') return;
    try {
      const title = `${peer} is calling`;
      const n = new N(title, { body: 'Open duet to answer.', tag: 'duet-call', requireInteraction: true, icon: ICON });
      n.addEventListener('show', () => {
        this.#notices.shown += 1;
        this.#notices.lastTitle = title;
      });
      n.addEventListener('error', () => {
        this.#notices.lastError = 'the browser refused to show it';
      });
      n.addEventListener('click', () => {
        this.#win.focus();
        n.close();
      });
      this.#notification = n;
    } catch (err) {
      this.#notices.lastError = String(err?.message ?? err);
    }
  }
}
