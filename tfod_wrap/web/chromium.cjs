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

// The script's whole run: `body(request, browser)` with Chromium started with `args(request)` (the request is the
// JSON of the first argument); what it returns is printed as one JSON line. Exit status 1, with the stack on
// stderr, only when the harness itself fails; the browser is closed either way.
function run(args, body) {
  (async () => {
    const request = JSON.parse(process.argv[2]);
    const browser = await launch(request, args(request));
    try {
      process.stdout.write(`${JSON.stringify(await body(request, browser))}\n`);
    } finally {
      await browser.close();
    }
  })().catch((error) => {
    console.error(error && error.stack ? error.stack : String(error));
    process.exit(1);
  });
}

module.exports = { run };
