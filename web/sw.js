// The service worker: keeps the app shell (the page, its style, scripts and icons) so the
// client opens offline and installs as an app. Network first, so a new duet binary's
// client is used at once; the cache only answers when the network does not. Never
// touched: the WebSocket (/ws, and upgrades at /), the sign-in routes (/auth/*), the
// call links (/call/*), /healthz and /metrics, and anything not a same-origin GET.

const CACHE = 'duet-shell-v1';
const SHELL = ['./', 'index.html', 'style.css', 'icon.svg', 'manifest.webmanifest', 'icons/duet-192.png', 'js/main.js'];
const NEVER = [/^\/ws$/, /^\/auth\//, /^\/call\//, /^\/healthz$/, /^\/metrics$/];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function cacheable(request) {
  if (request.method !== 'GET') return false;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return false;
  if (request.headers.get('upgrade')) return false;
  return !NEVER.some((re) => re.test(url.pathname));
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (!cacheable(request)) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(request);
        if (response.ok && response.type === 'basic') cache.put(request, response.clone());
        return response;
      } catch (err) {
        const hit = (await cache.match(request, { ignoreSearch: request.mode === 'navigate' })) ??
          (request.mode === 'navigate' ? await cache.match('./') : undefined);
        if (hit) return hit;
        throw err;
      }
    })(),
  );
});

// The page names the files it loaded (its modules change as the client grows), so the
// cache holds all of them, not only the list above.
self.addEventListener('message', (event) => {
  const urls = Array.isArray(event.data?.cache) ? event.data.cache : [];
  const wanted = urls.filter((u) => typeof u === 'string' && cacheable(new Request(u)));
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(wanted)).catch(() => {}));
});
