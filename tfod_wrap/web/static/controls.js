// The page's elements: its controls (score threshold, file input, camera button, dropping an image anywhere)
// and its messages (status line, error box, model, backend and speed).

import { isolationText } from "./isolation.js";
import { describe, log, params, state } from "./state.js";

const IDS = ["video", "image", "overlay", "stage", "status", "error", "model-name", "runtime", "backend", "fps",
  "inference",
  "isolation", "threshold", "threshold-value", "file", "camera", "detections"];

export const ui = Object.fromEntries(IDS.map((id) => [id, document.getElementById(id)]));

export function setStatus(text) {
  ui.status.textContent = text;
}

export function showError(message) {
  state.error = message;
  ui.error.textContent = message;
  ui.error.hidden = false;
  log({ event: "error", error: message });
}

export function clearError() {
  state.error = null;
  ui.error.hidden = true;
  ui.error.textContent = "";
}

export function showModel() {
  ui["model-name"].textContent = state.model || "loading…";
}

const RUNTIME_NAMES = { tflite: "TFLite (MediaPipe)", tfjs: "TF.js" };

// Which runtime runs the model, as the header says it.
export function runtimeText() {
  return RUNTIME_NAMES[state.runtime] || "none";
}

function threadsText(wasm) {
  if (wasm.threads) return "threads";
  return wasm.workers > 1 ? `${wasm.workers} workers of 1 thread` : wasm.workers ? "1 worker, 1 thread" : "1 thread";
}

export function showBackend() {
  const wasm = state.wasm;
  ui.runtime.textContent = runtimeText();
  ui.runtime.title = state.backendErrors.tflite ? `TFLite did not run: ${state.backendErrors.tflite}` : "";
  ui.backend.textContent = (state.backend || "none") +
    (wasm ? ` (${wasm.engine ? `${wasm.engine}, ` : ""}${threadsText(wasm)}` +
      `${wasm.simd ? ", SIMD" : ""})` : "");
}

// Whether the page is cross-origin isolated (wasm may use threads), and how; or why not (in the tooltip).
export function showIsolation() {
  const isolation = state.isolation;
  ui.isolation.textContent = isolationText(isolation);
  ui.isolation.title = isolation && !isolation.isolated ? `not cross-origin isolated: ${isolation.reason}` : "";
}

// FPS (on the camera only) and the last inference time.
export function showSpeed(onCamera) {
  ui.fps.textContent = onCamera && state.fps ? state.fps.toFixed(1) : "-";
  ui.inference.textContent = state.inferenceMs == null ? "-" : `${state.inferenceMs.toFixed(0)} ms`;
}

// The score threshold: ?threshold=0.3 sets where the slider starts; `changed()` after each move.
function setupThreshold(changed) {
  const initial = parseFloat(params.get("threshold"));
  if (initial >= 0 && initial <= 1) ui.threshold.value = String(initial);
  const onInput = () => {
    state.threshold = parseFloat(ui.threshold.value);
    ui["threshold-value"].textContent = state.threshold.toFixed(2);
    changed();
  };
  ui.threshold.addEventListener("input", onInput);
  onInput();
}

// An image dropped anywhere on the page goes to `chosen(file)`; the stage is highlighted while one is dragged.
function setupDrop(chosen) {
  let depth = 0; // dragenter/dragleave pairs: child elements send their own
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth += 1;
    ui.stage.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) ui.stage.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    ui.stage.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) chosen(files[0]);
  });
}

// Wire the controls to the page: thresholdChanged(), imageChosen(file), cameraAsked(), resized().
export function setupControls({ thresholdChanged, imageChosen, cameraAsked, resized }) {
  setupThreshold(thresholdChanged);
  ui.file.addEventListener("change", () => {
    const file = ui.file.files && ui.file.files[0];
    ui.file.value = "";
    imageChosen(file);
  });
  ui.camera.addEventListener("click", () => cameraAsked());
  setupDrop(imageChosen);
  window.addEventListener("resize", resized);
  window.addEventListener("unhandledrejection", (event) => showError(`Unexpected error: ${describe(event.reason)}`));
}
