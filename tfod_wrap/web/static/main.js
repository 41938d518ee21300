// tfod-wrap live detection page: a detector exported by `tfod-wrap export`, on the webcam or on an image: its TFLite
// model on MediaPipe (XNNPACK wasm) when the export has one, else its TF.js graph model.
// ES modules, no build step: model.js and mediapipe.js (the detector; mediapipe_task.js and mediapipe_worker.js run
// MediaPipe in workers), camera.js, drawing.js, controls.js (the page's elements),
// isolation.js (cross-origin isolation, for wasm threads), state.js (window.tfodWrap) and this file, which runs the
// page. MediaPipe and TF.js come from vendor/, the model and its metadata.json from model/, both beside the page.
//
// URL parameters: ?runtime=tfjs|tflite forces a runtime (default: tflite when model/formats.json lists it);
// ?backend=webgl|wasm|cpu forces TF.js on that backend (default: WebGL when it runs the model, else wasm, else
// cpu); ?workers=N runs MediaPipe in N workers (default 2; 0: on the page's thread); ?threshold=0.3 sets the initial
// score threshold; ?log=N logs a state line every N frames (default 30).

import { Camera, FpsMeter, cameraError, nextFrame } from "./camera.js";
import {
  clearError, runtimeText, setStatus, setupControls, showBackend, showError, showIsolation, showModel, showSpeed, ui,
} from "./controls.js";
import { drawDetections, listDetections } from "./drawing.js";
import { settleIsolation } from "./isolation.js";
import { loadDetector } from "./model.js";
import { describe, log, params, state } from "./state.js";

const logEvery = Math.max(1, parseInt(params.get("log") || "30", 10) || 30);
const camera = new Camera(ui.video);
const meter = new FpsMeter();
// What is shown ("camera" or "image"); the camera loop that may run (a new mode bumps it, and an older loop stops);
// the last detections before the score threshold;
// the camera frames sent to the detector and the latest one shown.
const view = { mode: "camera", loop: 0, detections: [], sentFrame: 0, shownFrame: 0 };
let detector = null;

function redraw() {
  drawDetections(ui.overlay, view.mode === "image" ? ui.image : ui.video, state.lastDetections);
}

function applyThreshold() {
  state.lastDetections = view.detections.filter((d) => d.score >= state.threshold);
  redraw();
  listDetections(ui.detections, state.lastDetections, state.threshold);
}

// The detections on `source`, or null when the detector failed (the error is shown).
async function detect(source) {
  try {
    const { detections, inferenceMs } = await detector.detect(source);
    state.inferenceMs = inferenceMs;
    state.numTensors = detector.numTensors();
    return detections;
  } catch (error) {
    showError(`Detection failed on ${runtimeText()}: ${describe(error)}`);
    return null;
  }
}

function show(detections, source) {
  state.source = source;
  view.detections = detections;
  applyThreshold();
  showSpeed(view.mode === "camera");
}

function logFrame() {
  log({ frames: state.frames, fps: Number(state.fps.toFixed(2)), inferenceMs: Number(state.inferenceMs.toFixed(1)),
    runtime: state.runtime, backend: state.backend, numTensors: state.numTensors,
    detections: state.lastDetections.slice(0, 10) });
}

// One camera frame's detections shown, unless a later frame's are already (with several slots, a frame can overtake
// the one before it).
function showFrame(frame, detections) {
  if (frame < view.shownFrame) return;
  view.shownFrame = frame;
  const fps = meter.tick(performance.now());
  if (fps !== null) state.fps = fps;
  state.frames += 1;
  show(detections, "camera");
  if (state.firstDetectionAt === null && state.lastDetections.length) {
    state.firstDetectionAt = performance.timeOrigin + performance.now(); // epoch ms: comparable across reloads
  }
  if (state.frames % logEvery === 0) logFrame();
}

// Detect on the camera until the mode changes, keeping up to detector.slots frames in flight (MediaPipe's workers;
// TF.js has one slot), one new frame at most an animation frame.
async function cameraLoop(loop) {
  const current = () => loop === view.loop && view.mode === "camera";
  const slots = detector.slots || 1;
  const inFlight = new Set();
  let failed = false;
  while (current() && !failed) {
    if (camera.hasFrame && inFlight.size < slots) {
      const frame = ++view.sentFrame;
      const job = detect(ui.video).then((detections) => {
        if (!detections) failed = true;
        else if (current()) showFrame(frame, detections);
      });
      inFlight.add(job);
      job.finally(() => inFlight.delete(job));
    }
    if (inFlight.size >= slots) await Promise.race(inFlight);
    await nextFrame(); // also lets the page draw and answer events between frames on its own thread
  }
  await Promise.all(inFlight);
}

async function toCamera() {
  view.mode = "camera";
  const loop = ++view.loop;
  ui.image.hidden = true;
  ui.video.hidden = false;
  ui.camera.disabled = true;
  view.detections = [];
  applyThreshold();
  meter.reset();
  setStatus("Starting the camera…");
  try {
    await camera.start();
  } catch (error) {
    showError(cameraError(error));
    setStatus("No camera: drop an image or choose a file to run the detector.");
    ui.camera.disabled = false;
    return;
  }
  if (loop !== view.loop) return;
  clearError();
  setStatus(`Detecting on the camera (${ui.video.videoWidth}×${ui.video.videoHeight}).`);
  cameraLoop(loop);
}

// Decode the file into the <img>; false (with the error shown) when the browser cannot.
async function showImage(file) {
  const url = URL.createObjectURL(file);
  try {
    ui.image.src = url;
    await ui.image.decode();
  } catch (error) {
    showError(`${file.name}: the browser could not decode this image`);
    return false;
  } finally {
    setTimeout(() => URL.revokeObjectURL(url), 0);
  }
  ui.video.hidden = true;
  ui.image.hidden = false;
  ui.camera.disabled = false;
  return true;
}

async function toImage(file) {
  if (!state.ready || !file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name}: not an image (${file.type})`);
    return;
  }
  view.mode = "image";
  view.loop += 1;
  if (!(await showImage(file))) return;
  const detections = await detect(ui.image);
  if (!detections) return;
  clearError();
  state.images += 1;
  show(detections, "image");
  setStatus(`Detections on ${file.name} (${ui.image.naturalWidth}×${ui.image.naturalHeight}).`);
  log({ event: "image", file: file.name, inferenceMs: Number(state.inferenceMs.toFixed(1)),
    detections: state.lastDetections.slice(0, 10) });
}

async function start() {
  setStatus("Checking cross-origin isolation…");
  state.isolation = await settleIsolation();
  showIsolation();
  try {
    detector = await loadDetector((text) => {
      setStatus(text);
      showModel();
    });
  } catch (error) {
    showModel();
    showBackend();
    setStatus("The page cannot run the detector.");
    showError(describe(error));
    return;
  }
  showModel();
  showBackend();
  state.numTensors = detector.numTensors();
  state.ready = true;
  log({ event: "ready", runtime: state.runtime, backend: state.backend, wasm: state.wasm, model: state.model,
    crossOriginIsolated: window.crossOriginIsolated, isolation: state.isolation, backendErrors: state.backendErrors });
  await toCamera();
}

setupControls({ thresholdChanged: applyThreshold, imageChosen: toImage, cameraAsked: toCamera, resized: redraw });
start();
