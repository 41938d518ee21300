// Headless Chromium for the Node scripts beside this file (run_page.cjs, play_video.cjs): playwright-core from
// the install's node_modules driving the Chromium that `make install` put on PATH (request.modules and
// request.chromium come from tfod_wrap/web/browser.py), quiet: no sync, updates or background traffic.
"use strict";
const path = require("path");

const QUIET = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

async function launch(request, args) {
  const { chromium } = require(path.join(request.modules, "playwright-core"));
  return chromium.launch({ executablePath: request.chromium, headless: true, args: [...QUIET, ...args] });
}

module.exports = { launch };
