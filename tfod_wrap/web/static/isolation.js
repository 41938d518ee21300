// Cross-origin isolation, which the wasm backend needs for threads (SharedArrayBuffer needs crossOriginIsolated).
// `tfod-wrap serve`, and hosts that read the site's _headers, netlify.toml or vercel.json, send the COOP/COEP
// headers themselves. On a host that sets no headers (GitHub Pages, S3, a plain static server) the site's sw.js
// (written by `tfod-wrap export --site`) adds them to the site's own responses; it does so only for pages it
// controls, so the page registers it and reloads once. When neither works, the page runs on one thread.
//
// ?isolation=off skips the service worker (the page as a browser without one sees it).

import { describe, params } from "./state.js";

const WORKER = "sw.js"; // beside index.html: its scope is the site's folder, wherever the site is hosted
const RELOADED = "tfod-wrap-isolation-reload"; // sessionStorage: this tab already reloaded once for isolation
const WAIT_MS = 10000; // how long the worker may take to install and activate

function session(action) {
  try {
    return action(window.sessionStorage);
  } catch (error) {
    return null; // storage refused (some privacy settings): no reload then, since a loop could not be ruled out
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// {isolated, via: "headers" | "service worker" | null, reason}: how the page is isolated, or why it is not. When
// the service worker is new, the page reloads (once per tab session) and the promise never resolves.
export async function settleIsolation() {
  const worker = navigator.serviceWorker;
  if (window.crossOriginIsolated) {
    session((storage) => storage.removeItem(RELOADED));
    return { isolated: true, via: worker && worker.controller ? "service worker" : "headers", reason: null };
  }
  if (params.get("isolation") === "off") return { isolated: false, via: null, reason: "?isolation=off" };
  if (!window.isSecureContext || !worker) {
    return { isolated: false, via: null, reason: "no service workers here (they need https or localhost)" };
  }
  if (session((storage) => storage.getItem(RELOADED))) {
    // Reloaded once already and still not isolated: the browser does not apply the worker's headers. No loop.
    return { isolated: false, via: null, reason: "the service worker's headers did not isolate the page" };
  }
  try {
    await navigator.serviceWorker.register(WORKER);
    await withTimeout(navigator.serviceWorker.ready, WAIT_MS, "the service worker's start");
  } catch (error) {
    return { isolated: false, via: null, reason: `no service worker (${describe(error)})` };
  }
  // Active now (or already, when a hard reload bypassed it): the next load of this page goes through it.
  if (!session((storage) => storage.setItem(RELOADED, "1") || true)) {
    return { isolated: false, via: null, reason: "no session storage to guard the reload" };
  }
  window.location.reload();
  return new Promise(() => {});
}

export function isolationText(isolation) {
  if (!isolation) return "-";
  return isolation.isolated ? `on (${isolation.via})` : "off (wasm: 1 thread)";
}
