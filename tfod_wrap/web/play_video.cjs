// Play a video file in headless Chromium's <video> element and print what happened as one JSON line.
//
//   node play_video.cjs REQUEST_JSON
//
// REQUEST: {"modules": node_modules folder (playwright-core), "chromium": executable, "video": the file,
//           "type": its MIME type with codecs, for canPlayType, "timeout_ms": how long to wait for the end}
// Prints: {canPlayType, ended, error (the MediaError code and message, or null), duration, currentTime,
//          videoWidth, videoHeight, framesDecoded (from getVideoPlaybackQuality), seconds, timedOut}
// The page and the video are served from an address Playwright answers itself (no server, no file:// rules);
// the video answers byte-range requests, as a web server would, so Chromium's media loader sees what it sees
// on the web.
"use strict";
const fs = require("fs");
const path = require("path");
const { run } = require(path.join(__dirname, "chromium.cjs"));

const ORIGIN = "http://tfod-wrap.invalid";

run(() => ["--autoplay-policy=no-user-gesture-required"], async (request, browser) => {
  const page = await browser.newPage();
  const body = fs.readFileSync(request.video);
  await page.route(`${ORIGIN}/**`, (route) => {
    const url = new URL(route.request().url());
    if (url.pathname !== "/video") {
      return route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>video</title>" });
    }
    const range = /bytes=(\d+)-(\d*)/.exec(route.request().headers()["range"] || "");
    if (!range) return route.fulfill({ status: 200, contentType: request.type, body });
    const start = Number(range[1]);
    const end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1;
    return route.fulfill({
      status: 206,
      headers: {
        "Content-Type": request.type,
        "Content-Range": `bytes ${start}-${end}/${body.length}`,
        "Accept-Ranges": "bytes",
      },
      body: body.subarray(start, end + 1),
    });
  });
  await page.goto(`${ORIGIN}/`);
  const started = Date.now();
  const report = await page.evaluate(
    ({ type, timeoutMs }) =>
      new Promise((resolve) => {
        const video = document.createElement("video");
        video.muted = true;
        video.playsInline = true;
        const canPlayType = video.canPlayType(type);
        const finish = (ended, timedOut) => {
          const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
          resolve({
            canPlayType,
            ended,
            timedOut,
            error: video.error ? { code: video.error.code, message: video.error.message } : null,
            duration: video.duration,
            currentTime: video.currentTime,
            videoWidth: video.videoWidth,
            videoHeight: video.videoHeight,
            framesDecoded: quality.totalVideoFrames ?? null,
          });
        };
        video.addEventListener("ended", () => finish(true, false));
        video.addEventListener("error", () => finish(false, false));
        setTimeout(() => finish(false, true), timeoutMs);
        document.body.appendChild(video);
        video.src = "/video";
        video.play().catch(() => {}); // a refusal shows as the error event, or as no end before the timeout
      }),
    { type: request.type, timeoutMs: request.timeout_ms },
  );
  report.seconds = (Date.now() - started) / 1000;
  return report;
});
