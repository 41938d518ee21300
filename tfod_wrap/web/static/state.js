// The page's state, shared by its modules: one object, also window.tfodWrap, which the tests, the page
// benchmark and users read (ready, backend, fps, frames, lastDetections, error, ...). Console lines prefixed
// "tfod-wrap: " are JSON.

export const params = new URLSearchParams(window.location.search);

export const state = {
  ready: false, // model loaded and warmed up on a backend
  runtime: null, // what runs the model: "tflite" (MediaPipe Tasks, XNNPACK wasm) or "tfjs"
  backend: null, // the TF.js backend in use ("wasm" for MediaPipe too)
  backendErrors: {}, // why the runtimes ("tflite") and TF.js backends tried before it failed
  model: null, // a short description of the model
  source: "camera", // what lastDetections come from: "camera" or "image"
  fps: 0, // camera frames processed per second, smoothed
  frames: 0, // camera frames processed
  images: 0, // images (dropped or chosen) processed
  inferenceMs: null, // the last frame's pre-processing + executeAsync + download, in ms
  threshold: 0.5,
  lastDetections: [], // [{classId, name, score, box: [ymin, xmin, ymax, xmax] normalised}], score >= threshold
  numTensors: null, // tf.memory().numTensors after the last frame: flat when nothing leaks (null on MediaPipe)
  wasm: null, // {threads, simd} when the wasm backend is in use (and engine: "XNNPACK" on MediaPipe)
  isolation: null, // {isolated, via: "headers" | "service worker" | null, reason}: see isolation.js
  firstDetectionAt: null, // when a camera frame first had a detection above the threshold (epoch ms)
  error: null, // the message shown on the page, or null
};
window.tfodWrap = state;

export function log(fields) {
  console.log("tfod-wrap: " + JSON.stringify(fields));
}

export function describe(error) {
  if (!error) return "unknown error";
  return error.message ? error.message : String(error);
}
