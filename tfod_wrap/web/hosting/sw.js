// tfod-wrap site: cross-origin isolation on hosts that cannot set response headers (GitHub Pages, S3, a plain
// static server). The page (isolation.js) registers this worker and reloads once; from then on every response of
// the site's own origin reaches the page with COOP/COEP (which make it crossOriginIsolated, so the wasm backend may
// use threads) and CORP. Requests to other origins are left to the browser untouched (the page makes none).
// Nothing is cached here: the browser's HTTP cache works as without the worker.
"use strict";

const ISOLATION_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

// Active at once, and in control of the page that registered it (which reloads anyway).
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (new URL(request.url).origin !== self.location.origin) return;
  // Chromium's devtools ask for only-if-cached with a mode fetch() refuses: leave those to the browser.
  if (request.cache === "only-if-cached" && request.mode !== "same-origin") return;
  event.respondWith(withIsolation(request));
});

async function withIsolation(request) {
  const response = await fetch(request);
  // Opaque responses (redirects followed by the browser) cannot be read or rebuilt: passed on as they are.
  if (response.type === "opaque" || response.type === "opaqueredirect" || response.status === 0) return response;
  const headers = new Headers(response.headers);
  for (const [name, value] of Object.entries(ISOLATION_HEADERS)) headers.set(name, value);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
