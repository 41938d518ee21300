// The camera: getUserMedia into the <video>, what its failures mean for the user, and the pacing and speed of
// the detection loop that runs on it.

import { describe } from "./state.js";

export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
  }

  // Start (or resume) the camera; resolves once the video has a frame.
  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const error = new Error("no navigator.mediaDevices.getUserMedia");
      error.name = window.isSecureContext ? "NotSupportedError" : "InsecureContext";
      throw error;
    }
    if (!this.stream || !this.stream.active) {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
      this.video.srcObject = this.stream;
    }
    await this.video.play();
    if (this.video.readyState < 2) {
      await new Promise((resolve) => this.video.addEventListener("loadeddata", resolve, { once: true }));
    }
  }

  get hasFrame() {
    return this.video.readyState >= 2 && this.video.videoWidth > 0;
  }
}

// The message for a getUserMedia failure: what happened and what to do.
export function cameraError(error) {
  const name = error && error.name;
  const port = window.location.port ? `:${window.location.port}` : "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Camera permission was denied: allow the camera for this page and reload (or drop an image).";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return "No camera found: connect one and press “Back to the camera”, or drop an image.";
  }
  if (name === "NotReadableError" || name === "TrackStartError") {
    return "The camera could not be started: another application may be using it.";
  }
  if (name === "InsecureContext") {
    return `The camera needs a secure context: open http://127.0.0.1${port}/ or http://localhost${port}/ ` +
      "on the machine running `tfod-wrap serve` (or serve over HTTPS). Images can still be dropped.";
  }
  return `The camera could not be started: ${describe(error)}`;
}

// The next animation frame; in a hidden tab (no animation frames) 100 ms.
export function nextFrame() {
  return new Promise((resolve) => {
    if (document.hidden) setTimeout(resolve, 100);
    else window.requestAnimationFrame(() => resolve());
  });
}

// Frames per second, smoothed over the intervals between processed frames.
export class FpsMeter {
  constructor() {
    this.reset();
  }

  reset() {
    this.averageInterval = null;
    this.lastFrameAt = null;
  }

  // A frame done at `now` (ms); the smoothed rate, or null for the first frame after a reset.
  tick(now) {
    const previous = this.lastFrameAt;
    this.lastFrameAt = now;
    if (previous === null) return null;
    const interval = now - previous;
    this.averageInterval = this.averageInterval === null ? interval : 0.8 * this.averageInterval + 0.2 * interval;
    return 1000 / this.averageInterval;
  }
}
