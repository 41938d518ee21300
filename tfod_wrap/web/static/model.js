// The detector: model/metadata.json checked, then the fastest runtime that runs the model (model/formats.json says
// what the export has): the TFLite model on MediaPipe (mediapipe.js) when there is one, else the TF.js graph model
// (model/model.json) on the first backend that runs it; detect(pixels) -> detections. TF.js itself is the global
// `tf`, loaded from vendor/ only when the page runs it.
// Every path is relative to the page, so the page works in any folder of a host (a GitHub Pages project site is
// served under /REPOSITORY/), not only at the root where `tfod-wrap serve` puts it.

import { MediaPipeDetector, workerCount } from "./mediapipe.js";
import { describe, log, params, state } from "./state.js";

const TFJS = ["vendor/tfjs/tf.min.js", "vendor/tfjs-backend-wasm/tf-backend-wasm.min.js"]; // in this order
const WASM_FOLDER = "vendor/tfjs-backend-wasm/";
const METADATA = "model/metadata.json";
const MODEL = "model/model.json";
const FORMATS = "model/formats.json";
const RUNTIMES = ["tflite", "tfjs"]; // ?runtime=: what the page may be told to run

// A classic script, run: TF.js's UMD builds define the global `tf` (and register the wasm backend on it).
function loadScript(path) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = path;
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`${path} did not load`));
    document.head.appendChild(script);
  });
}

// TF.js and its wasm backend (after cross-origin isolation is settled: a reload would fetch them for nothing).
async function loadTfjs() {
  for (const path of TFJS) await loadScript(path);
}

const OUTPUTS = ["detection_boxes", "detection_classes", "detection_scores", "num_detections"];
const BACKENDS = ["webgl", "wasm", "cpu"];

async function fetchJson(url) {
  let response;
  try {
    response = await fetch(url, { cache: "no-cache" });
  } catch (error) {
    throw new Error(`${url}: the server did not answer (${describe(error)})`);
  }
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  try {
    return await response.json();
  } catch (error) {
    throw new Error(`${url}: not valid JSON (${describe(error)})`);
  }
}

function checkMetadata(data) {
  const problems = [];
  if (!data || typeof data !== "object") throw new Error(`${METADATA}: not a JSON object`);
  if (!data.input || typeof data.input.name !== "string") problems.push("input.name");
  if (!data.outputs) problems.push("outputs");
  for (const name of OUTPUTS) {
    if (!data.outputs || !data.outputs[name] || typeof data.outputs[name].tensor !== "string") {
      problems.push(`outputs.${name}.tensor`);
    }
  }
  if (!Array.isArray(data.classes)) problems.push("classes");
  const resize = data.input && data.input.resize_to;
  if (resize != null && !(Array.isArray(resize) && resize.length === 2)) problems.push("input.resize_to");
  if (problems.length) throw new Error(`${METADATA} lacks or has a bad ${problems.join(", ")}`);
}

// The WebGL renderer's name when it is a software one (SwiftShader, llvmpipe): slower than wasm, so the automatic
// choice skips it; ?backend=webgl still uses it.
function softwareWebGL() {
  try {
    const canvas = document.createElement("canvas");
    const gl = canvas.getContext("webgl2") || canvas.getContext("webgl");
    if (!gl) return null;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const renderer = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER) || "");
    const lose = gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
    return /swiftshader|llvmpipe|softpipe|software/i.test(renderer) ? renderer : null;
  } catch (error) {
    return null;
  }
}

async function startBackend(name) {
  if (!tf.findBackendFactory(name)) {
    throw new Error(name === "wasm" ? "tf-backend-wasm.min.js did not load" : "not in this TF.js build");
  }
  let ok;
  try {
    ok = await tf.setBackend(name);
  } catch (error) {
    throw new Error(`did not start (${describe(error)})`);
  }
  if (!ok) throw new Error("did not start (not supported by this browser?)");
  await tf.ready();
}

function describeModel(metadata) {
  const names = metadata.classes.map((entry) => entry.name);
  return `${metadata.name || metadata.architecture || "detector"}, ${names.length} classes` +
    (names.length <= 6 ? ` (${names.join(", ")})` : "");
}

class Detector {
  constructor(metadata) {
    this.metadata = metadata;
    this.input = metadata.input;
    this.tensorNames = OUTPUTS.map((name) => metadata.outputs[name].tensor);
    this.classNames = new Map(metadata.classes.map((entry) => [Number(entry.id), String(entry.name)]));
    this.graph = null;
  }

  // The graph model on a backend, run once: a backend that starts but cannot run the graph fails here.
  async loadOn(name, artifacts) {
    await startBackend(name);
    const graph = await tf.loadGraphModel(tf.io.fromMemory(artifacts));
    const resize = this.input.resize_to;
    const shape = resize ? [1, resize[0], resize[1], 3] : [1, 240, 320, 3];
    const input = tf.zeros(shape, this.input.dtype === "float32" ? "float32" : "int32");
    let outputs = null;
    try {
      outputs = await graph.executeAsync({ [this.input.name]: input }, this.tensorNames);
      await Promise.all(outputs.map((tensor) => tensor.data()));
    } catch (error) {
      graph.dispose();
      throw new Error(`could not run the model (${describe(error)})`);
    } finally {
      tf.dispose(input);
      if (outputs) tf.dispose(outputs);
    }
    this.graph = graph;
  }

  // Pixels -> [1, h, w, 3] in the dtype of the model's input (fromPixels gives int32 RGB and drops alpha).
  preprocess(source) {
    return tf.tidy(() => {
      let pixels = tf.browser.fromPixels(source);
      const resize = this.input.resize_to;
      if (resize) pixels = tf.image.resizeBilinear(pixels, [resize[0], resize[1]]);
      if (this.input.dtype === "float32") {
        pixels = pixels.toFloat();
      } else if (pixels.dtype !== "int32") {
        pixels = tf.round(pixels).toInt();
      }
      return pixels.expandDims(0);
    });
  }

  // {detections: [{classId, name, score, box: [ymin, xmin, ymax, xmax] normalised}], inferenceMs}: every
  // detection the model returns; the page applies the score threshold.
  async detect(source) {
    const start = performance.now();
    const batch = this.preprocess(source);
    let outputs = null;
    let values;
    try {
      outputs = await this.graph.executeAsync({ [this.input.name]: batch }, this.tensorNames);
      values = await Promise.all(outputs.map((tensor) => tensor.data()));
    } finally {
      tf.dispose(batch);
      if (outputs) tf.dispose(outputs);
    }
    const inferenceMs = performance.now() - start;
    const [boxes, classes, scores, count] = values;
    const valid = Math.min(Math.round(count[0]), scores.length);
    const detections = [];
    for (let i = 0; i < valid; i++) {
      const classId = Math.round(classes[i]);
      detections.push({
        classId,
        name: this.classNames.has(classId) ? this.classNames.get(classId) : `class ${classId}`,
        score: scores[i],
        box: [boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]],
      });
    }
    return { detections, inferenceMs };
  }
}

async function loadArtifacts() {
  try {
    return await tf.io.http(MODEL).load();
  } catch (error) {
    throw new Error(`Could not load the model from ${MODEL}: ${describe(error)}`);
  }
}

// The backends to try: ?backend=NAME alone, else each in BACKENDS order.
function backendsToTry() {
  const forced = params.get("backend");
  if (forced && !BACKENDS.includes(forced)) {
    throw new Error(`?backend=${forced}: unknown backend; use one of ${BACKENDS.join(", ")}`);
  }
  return { forced: Boolean(forced), names: forced ? [forced] : BACKENDS };
}

async function wasmFeatures() {
  return {
    threads: Boolean(await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT")),
    simd: Boolean(await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")),
  };
}

// The TF.js detector on the first backend that runs it; records backend, backendErrors and wasm in the state.
async function loadTfjsModel(metadata, progress) {
  progress("Loading TF.js…");
  try {
    await loadTfjs();
  } catch (error) {
    throw new Error(`${describe(error)}: is the server \`tfod-wrap serve\` or a site folder?`);
  }
  if (typeof tf === "undefined") {
    throw new Error(`TF.js did not load from ${TFJS[0]}: is the server \`tfod-wrap serve\` or a site folder?`);
  }
  // An absolute address: the threaded backend hands it to its workers, which have no page to resolve it against.
  if (tf.wasm) tf.wasm.setWasmPaths(new URL(WASM_FOLDER, document.baseURI).href);

  const detector = new Detector(metadata);
  progress("Loading the model's weights…");
  const artifacts = await loadArtifacts();

  const { forced, names } = backendsToTry();
  for (const name of names) {
    const software = !forced && name === "webgl" ? softwareWebGL() : null;
    if (software) {
      state.backendErrors.webgl = `software renderer (${software}), slower than wasm; force it with ?backend=webgl`;
      log({ event: "backend-skipped", backend: name, reason: state.backendErrors.webgl });
      continue;
    }
    progress(`Starting the ${name} backend…`);
    try {
      await detector.loadOn(name, artifacts);
      state.backend = tf.getBackend();
      break;
    } catch (error) {
      state.backendErrors[name] = describe(error);
      log({ event: "backend-failed", backend: name, error: state.backendErrors[name] });
    }
  }
  if (!detector.graph) {
    const reasons = Object.entries(state.backendErrors).map(([name, why]) => `${name}: ${why}`).join("\n");
    throw new Error(`No TF.js backend could run the model:\n${reasons}`);
  }
  if (state.backend === "wasm") state.wasm = await wasmFeatures();
  detector.numTensors = () => tf.memory().numTensors;
  return detector;
}

// The runtimes to try, fastest first: ?runtime=tflite|tfjs alone (?backend=NAME means TF.js), else what
// model/formats.json lists (a folder without it, such as an older site, has TF.js only).
async function runtimesToTry() {
  workerCount(); // a bad ?workers= is refused here, not taken for a MediaPipe failure that falls back to TF.js
  const forced = params.get("runtime");
  if (forced && !RUNTIMES.includes(forced)) {
    throw new Error(`?runtime=${forced}: unknown runtime; use one of ${RUNTIMES.join(", ")}`);
  }
  if (forced === "tflite" && params.get("backend")) {
    throw new Error("?backend= picks a TF.js backend: it does not go with ?runtime=tflite");
  }
  if (forced) return [forced];
  if (params.get("backend")) return ["tfjs"];
  try {
    const listed = (await fetchJson(FORMATS)).formats;
    const known = Array.isArray(listed) ? listed.filter((name) => RUNTIMES.includes(name)) : [];
    return known.includes("tfjs") ? known : [...known, "tfjs"];
  } catch (error) {
    log({ event: "formats-missing", error: describe(error) });
    return ["tfjs"];
  }
}

async function loadMediaPipe(metadata, progress) {
  progress("Loading MediaPipe and the TFLite model…");
  const detector = new MediaPipeDetector(metadata);
  await detector.load();
  state.backend = "wasm";
  // MediaPipe's web build runs on one thread, in each of the detector's workers
  state.wasm = { threads: false, simd: true, engine: "XNNPACK", workers: detector.workers.length };
  detector.numTensors = () => null;
  return detector;
}

// The detector on the first runtime (and, for TF.js, backend) that runs it; records model, runtime, backend,
// backendErrors and wasm in the state. `progress(text)` is told what is being loaded.
export async function loadDetector(progress) {
  progress("Loading the model…");
  let metadata;
  try {
    metadata = await fetchJson(METADATA);
  } catch (error) {
    throw new Error(`Could not load the model: ${describe(error)}`);
  }
  checkMetadata(metadata);
  state.model = describeModel(metadata);
  const runtimes = await runtimesToTry();
  for (const runtime of runtimes) {
    try {
      const load = runtime === "tflite" ? loadMediaPipe : loadTfjsModel;
      const detector = await load(metadata, progress);
      state.runtime = runtime;
      return detector;
    } catch (error) {
      if (runtime === runtimes[runtimes.length - 1]) throw error;
      state.backendErrors[runtime] = describe(error);
      log({ event: "runtime-failed", runtime, error: state.backendErrors[runtime] });
    }
  }
  throw new Error("no runtime to try");
}
