// Open the tfod-wrap webcam page in headless Chromium with a fake camera and print its state as one JSON line.
//
//   node run_page.cjs REQUEST_JSON
//
// REQUEST: {"modules": node_modules folder (playwright-core), "chromium": executable, "url": the served page,
//           "query": {"backend": "wasm", ...} URL parameters, "clip": .y4m file played as the camera,
//           "frames": N, "image": optional image file to choose in the page's file input afterwards,
//           "timeout_ms": how long to wait for N frames, "map_hosts": optional Chromium --host-resolver-rules,
//           such as "MAP example.com 127.0.0.1:9000", to see what the page would send to another host}
// Prints: {ready, runtime, backend, fps, frames, inferenceMs, lastDetections, error, crossOriginIsolated, isolation,
//          wasm, shown, numTensors: {early, late}, seconds, firstDetectionMs, timedOut, console: [...], requests: [...],
//          navigations: [...], image?: {...}}
// requests: every request of the browser context (pages and service workers): {url, resourceType, serviceWorker};
// navigations: the main frame's documents (the page may reload itself once for cross-origin isolation), so the
// state is read from whichever document is current.
// Exit status 1 only when the harness itself fails (Chromium does not start, the page does not load);
// errors of the page are in the printed state.
"use strict";
const path = require("path");
const { run } = require(path.join(__dirname, "chromium.cjs"));

run((request) => [
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  `--use-file-for-fake-video-capture=${request.clip}`,
  ...(request.map_hosts ? [`--host-resolver-rules=${request.map_hosts}`] : []),
], async (request, browser) => {
  const consoleLines = [];
  const requests = [];
  const navigations = [];
  const context = await browser.newContext({ viewport: { width: 1024, height: 800 } });
  context.on("request", (request) => {
    requests.push({
      url: request.url(),
      resourceType: request.resourceType(),
      serviceWorker: Boolean(request.serviceWorker()),
    });
  });
  const page = await context.newPage();
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) navigations.push(frame.url());
  });
  page.on("console", (message) => {
    const text = message.text();
    if (message.type() === "error" || message.type() === "warning" || text.startsWith("tfod-wrap:")) {
      consoleLines.push(`${message.type()}: ${text}`.slice(0, 2000));
    }
  });
  page.on("pageerror", (error) => consoleLines.push(`pageerror: ${error.message}`));

  const url = new URL(request.url);
  for (const [key, value] of Object.entries(request.query || {})) url.searchParams.set(key, String(value));
  const opened = Date.now();
  await page.goto(url.toString(), { waitUntil: "load" });

  const started = Date.now();
  const deadline = started + request.timeout_ms;
  // A document being replaced (the page reloading itself) has no state to read: read again on the next poll.
  const state = () =>
    page.evaluate(() => JSON.parse(JSON.stringify(window.tfodWrap || {}))).catch(() => ({ reloading: true }));
  const waitFor = async (test) => {
    for (;;) {
      const current = await state();
      if (current.error || test(current)) return { current, timedOut: false };
      if (Date.now() > deadline) return { current, timedOut: true };
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  // numTensors after an early frame and at the end: they must be equal (no tensor leaks per frame).
  const early = await waitFor((s) => s.frames >= Math.min(2, request.frames));
  let result = early;
  if (!early.timedOut && !early.current.error) result = await waitFor((s) => s.frames >= request.frames);
  const seconds = (Date.now() - started) / 1000;
  const final = result.current;
  const report = {
    ready: final.ready,
    runtime: final.runtime,
    backend: final.backend,
    fps: final.fps,
    frames: final.frames,
    inferenceMs: final.inferenceMs,
    lastDetections: final.lastDetections,
    error: final.error,
    backendErrors: final.backendErrors,
    model: final.model,
    crossOriginIsolated: await page.evaluate(() => window.crossOriginIsolated),
    // what the page's header bar says
    shown: await page.evaluate(() => ({
      runtime: document.getElementById("runtime").textContent,
      backend: document.getElementById("backend").textContent,
      isolation: document.getElementById("isolation").textContent,
    })),
    isolation: final.isolation,
    wasm: final.wasm,
    numTensors: { early: early.current.numTensors, late: final.numTensors },
    seconds,
    // from the start of the first navigation (reloads included) to the first camera frame with a detection
    firstDetectionMs: final.firstDetectionAt ? final.firstDetectionAt - opened : null,
    timedOut: result.timedOut,
    console: consoleLines,
    requests,
    navigations,
  };

  if (request.image && !final.error) {
    const before = final.images || 0;
    await page.setInputFiles("#file", request.image);
    const shown = await waitFor((s) => (s.images || 0) > before);
    report.image = {
      source: shown.current.source,
      detections: shown.current.lastDetections,
      inferenceMs: shown.current.inferenceMs,
      error: shown.current.error,
      timedOut: shown.timedOut,
      numTensors: shown.current.numTensors,
    };
  }
  return report;
});
