// tfod-wrap live detection page: a TF.js graph model exported by `tfod-wrap export`, on the webcam or on an image.
// Plain ES2017, no build step. TF.js comes from /vendor/tfjs/, the model and its metadata.json from /model/.
//
// URL parameters: ?backend=webgl|wasm|cpu forces a backend (default: WebGL when it runs the model, else wasm, else
// cpu); ?threshold=0.3 sets the initial score threshold; ?log=N logs a state line every N frames (default 30).
// State for tests and users: window.tfodWrap (see `state` below); console lines prefixed "tfod-wrap: " are JSON.
"use strict";

(function () {
  const OUTPUTS = ["detection_boxes", "detection_classes", "detection_scores", "num_detections"];
  const BACKENDS = ["webgl", "wasm", "cpu"];
  const COLORS = ["#3fb950", "#58a6ff", "#f0883e", "#db61a2", "#e3b341", "#a371f7", "#56d4dd", "#ff7b72"];

  const params = new URLSearchParams(window.location.search);
  const logEvery = Math.max(1, parseInt(params.get("log") || "30", 10) || 30);

  const state = {
    ready: false, // model loaded and warmed up on a backend
    backend: null, // the TF.js backend in use
    backendErrors: {}, // why the backends tried before it failed
    model: null, // a short description of the model
    source: "camera", // what lastDetections come from: "camera" or "image"
    fps: 0, // camera frames processed per second, smoothed
    frames: 0, // camera frames processed
    images: 0, // images (dropped or chosen) processed
    inferenceMs: null, // the last frame's pre-processing + executeAsync + download, in ms
    threshold: 0.5,
    lastDetections: [], // [{classId, name, score, box: [ymin, xmin, ymax, xmax] normalised}], score >= threshold
    numTensors: null, // tf.memory().numTensors after the last frame: flat when nothing leaks
    wasm: null, // {threads, simd} when the wasm backend is in use
    error: null, // the message shown on the page, or null
  };
  window.tfodWrap = state;

  const ui = {};
  for (const id of ["video", "image", "overlay", "stage", "status", "error", "model-name", "backend", "fps",
    "inference", "threshold", "threshold-value", "file", "camera", "detections"]) {
    ui[id] = document.getElementById(id);
  }

  let metadata = null;
  let model = null;
  let tensorNames = null;
  let classNames = new Map();
  let stream = null;
  let mode = "camera";
  let loopToken = 0;
  let rawDetections = [];
  let averageInterval = null;
  let lastFrameAt = null;

  function log(fields) {
    console.log("tfod-wrap: " + JSON.stringify(fields));
  }

  function showError(message) {
    state.error = message;
    ui.error.textContent = message;
    ui.error.hidden = false;
    log({ event: "error", error: message });
  }

  function clearError() {
    state.error = null;
    ui.error.hidden = true;
    ui.error.textContent = "";
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function describe(error) {
    if (!error) return "unknown error";
    return error.message ? error.message : String(error);
  }

  // ---- model --------------------------------------------------------------------------------------------------

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
    if (!data || typeof data !== "object") throw new Error("/model/metadata.json: not a JSON object");
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
    if (problems.length) throw new Error(`/model/metadata.json lacks or has a bad ${problems.join(", ")}`);
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

  function warmupShape() {
    const resize = metadata.input.resize_to;
    return resize ? [1, resize[0], resize[1], 3] : [1, 240, 320, 3];
  }

  // Load the model on a backend and run it once: a backend that starts but cannot run the graph fails here.
  async function loadOn(name, artifacts) {
    await startBackend(name);
    const loaded = await tf.loadGraphModel(tf.io.fromMemory(artifacts));
    const dtype = metadata.input.dtype === "float32" ? "float32" : "int32";
    const input = tf.zeros(warmupShape(), dtype);
    let outputs = null;
    try {
      outputs = await loaded.executeAsync({ [metadata.input.name]: input }, tensorNames);
      await Promise.all(outputs.map((tensor) => tensor.data()));
    } catch (error) {
      loaded.dispose();
      throw new Error(`could not run the model (${describe(error)})`);
    } finally {
      tf.dispose(input);
      if (outputs) tf.dispose(outputs);
    }
    return loaded;
  }

  async function loadModel() {
    if (typeof tf === "undefined") {
      throw new Error("TF.js did not load from /vendor/tfjs/tf.min.js: is the server `tfod-wrap serve`?");
    }
    if (tf.wasm) tf.wasm.setWasmPaths("/vendor/tfjs-backend-wasm/");

    setStatus("Loading the model…");
    try {
      metadata = await fetchJson("/model/metadata.json");
    } catch (error) {
      throw new Error(`Could not load the model: ${describe(error)}`);
    }
    checkMetadata(metadata);
    tensorNames = OUTPUTS.map((name) => metadata.outputs[name].tensor);
    classNames = new Map(metadata.classes.map((entry) => [Number(entry.id), String(entry.name)]));
    const names = metadata.classes.map((entry) => entry.name);
    state.model = `${metadata.name || metadata.architecture || "detector"}, ${names.length} classes` +
      (names.length <= 6 ? ` (${names.join(", ")})` : "");
    ui["model-name"].textContent = state.model;

    let artifacts;
    try {
      artifacts = await tf.io.http("/model/model.json").load();
    } catch (error) {
      throw new Error(`Could not load the model from /model/model.json: ${describe(error)}`);
    }

    const forced = params.get("backend");
    if (forced && !BACKENDS.includes(forced)) {
      throw new Error(`?backend=${forced}: unknown backend; use one of ${BACKENDS.join(", ")}`);
    }
    for (const name of forced ? [forced] : BACKENDS) {
      const software = !forced && name === "webgl" ? softwareWebGL() : null;
      if (software) {
        state.backendErrors.webgl = `software renderer (${software}), slower than wasm; force it with ?backend=webgl`;
        log({ event: "backend-skipped", backend: name, reason: state.backendErrors.webgl });
        continue;
      }
      setStatus(`Starting the ${name} backend…`);
      try {
        model = await loadOn(name, artifacts);
        state.backend = tf.getBackend();
        break;
      } catch (error) {
        state.backendErrors[name] = describe(error);
        log({ event: "backend-failed", backend: name, error: state.backendErrors[name] });
      }
    }
    if (!model) {
      const reasons = Object.entries(state.backendErrors).map(([name, why]) => `${name}: ${why}`).join("\n");
      throw new Error(`No TF.js backend could run the model:\n${reasons}`);
    }
    if (state.backend === "wasm") {
      state.wasm = {
        threads: Boolean(await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT")),
        simd: Boolean(await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")),
      };
    }
    ui.backend.textContent = state.backend + (state.wasm ? ` (${state.wasm.threads ? "threads" : "1 thread"}` +
      `${state.wasm.simd ? ", SIMD" : ""})` : "");
    state.numTensors = tf.memory().numTensors;
    state.ready = true;
    log({ event: "ready", backend: state.backend, wasm: state.wasm, model: state.model,
      crossOriginIsolated: window.crossOriginIsolated, backendErrors: state.backendErrors });
  }

  // ---- detection ----------------------------------------------------------------------------------------------

  // Pixels -> [1, h, w, 3] in the dtype of the model's input (fromPixels gives int32 RGB and drops alpha).
  function preprocess(source) {
    return tf.tidy(() => {
      let pixels = tf.browser.fromPixels(source);
      const resize = metadata.input.resize_to;
      if (resize) pixels = tf.image.resizeBilinear(pixels, [resize[0], resize[1]]);
      if (metadata.input.dtype === "float32") {
        pixels = pixels.toFloat();
      } else if (pixels.dtype !== "int32") {
        pixels = tf.round(pixels).toInt();
      }
      return pixels.expandDims(0);
    });
  }

  async function detect(source) {
    const start = performance.now();
    const batch = preprocess(source);
    let outputs = null;
    let values;
    try {
      outputs = await model.executeAsync({ [metadata.input.name]: batch }, tensorNames);
      values = await Promise.all(outputs.map((tensor) => tensor.data()));
    } finally {
      tf.dispose(batch);
      if (outputs) tf.dispose(outputs);
    }
    state.inferenceMs = performance.now() - start;
    state.numTensors = tf.memory().numTensors;
    const [boxes, classes, scores, count] = values;
    const valid = Math.min(Math.round(count[0]), scores.length);
    const detections = [];
    for (let i = 0; i < valid; i++) {
      const classId = Math.round(classes[i]);
      detections.push({
        classId,
        name: classNames.has(classId) ? classNames.get(classId) : `class ${classId}`,
        score: scores[i],
        box: [boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]],
      });
    }
    return detections;
  }

  function applyThreshold() {
    state.lastDetections = rawDetections.filter((d) => d.score >= state.threshold);
    draw();
    listDetections();
  }

  // ---- drawing ------------------------------------------------------------------------------------------------

  function mediaElement() {
    return mode === "image" ? ui.image : ui.video;
  }

  // Where the picture lies inside its element (object-fit: contain may letterbox it).
  function contentRect(element) {
    const width = element.clientWidth;
    const height = element.clientHeight;
    const naturalWidth = element.videoWidth || element.naturalWidth || width;
    const naturalHeight = element.videoHeight || element.naturalHeight || height;
    const scale = Math.min(width / naturalWidth, height / naturalHeight);
    const shownWidth = naturalWidth * scale;
    const shownHeight = naturalHeight * scale;
    return { x: (width - shownWidth) / 2, y: (height - shownHeight) / 2, width: shownWidth, height: shownHeight };
  }

  function draw() {
    const canvas = ui.overlay;
    const element = mediaElement();
    const ratio = window.devicePixelRatio || 1;
    const width = element.clientWidth;
    const height = element.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    if (!width || !height) return;
    const area = contentRect(element);
    context.lineWidth = 2;
    context.font = "600 13px system-ui, sans-serif";
    context.textBaseline = "top";
    for (const detection of state.lastDetections) {
      const [ymin, xmin, ymax, xmax] = detection.box;
      const x = area.x + xmin * area.width;
      const y = area.y + ymin * area.height;
      const w = (xmax - xmin) * area.width;
      const h = (ymax - ymin) * area.height;
      const color = COLORS[(detection.classId - 1 + COLORS.length) % COLORS.length];
      context.strokeStyle = color;
      context.strokeRect(x, y, w, h);
      const label = `${detection.name} ${(detection.score * 100).toFixed(0)}%`;
      const labelWidth = context.measureText(label).width + 8;
      const labelY = y >= 18 ? y - 18 : y;
      context.fillStyle = color;
      context.fillRect(x - 1, labelY, labelWidth, 18);
      context.fillStyle = "#0a0c0f";
      context.fillText(label, x + 3, labelY + 2);
    }
  }

  function listDetections() {
    const list = ui.detections;
    list.textContent = "";
    if (!state.lastDetections.length) {
      const item = document.createElement("li");
      item.className = "none";
      item.textContent = `none above ${state.threshold.toFixed(2)}`;
      list.appendChild(item);
      return;
    }
    for (const detection of state.lastDetections.slice(0, 20)) {
      const item = document.createElement("li");
      item.textContent = `${detection.name} ${detection.score.toFixed(2)}`;
      list.appendChild(item);
    }
  }

  function showSpeed() {
    ui.fps.textContent = mode === "camera" && state.fps ? state.fps.toFixed(1) : "-";
    ui.inference.textContent = state.inferenceMs == null ? "-" : `${state.inferenceMs.toFixed(0)} ms`;
  }

  // ---- camera -------------------------------------------------------------------------------------------------

  function cameraError(error) {
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

  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const error = new Error("no navigator.mediaDevices.getUserMedia");
      error.name = window.isSecureContext ? "NotSupportedError" : "InsecureContext";
      throw error;
    }
    if (!stream || !stream.active) {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
      ui.video.srcObject = stream;
    }
    await ui.video.play();
    if (ui.video.readyState < 2) {
      await new Promise((resolve) => ui.video.addEventListener("loadeddata", resolve, { once: true }));
    }
  }

  function nextFrame() {
    return new Promise((resolve) => {
      if (document.hidden) setTimeout(resolve, 100);
      else window.requestAnimationFrame(() => resolve());
    });
  }

  async function cameraLoop(token) {
    while (token === loopToken && mode === "camera") {
      if (ui.video.readyState >= 2 && ui.video.videoWidth > 0) {
        let detections;
        try {
          detections = await detect(ui.video);
        } catch (error) {
          showError(`Detection failed on the ${state.backend} backend: ${describe(error)}`);
          return;
        }
        if (token !== loopToken || mode !== "camera") return;
        const now = performance.now();
        if (lastFrameAt !== null) {
          const interval = now - lastFrameAt;
          averageInterval = averageInterval === null ? interval : 0.8 * averageInterval + 0.2 * interval;
          state.fps = 1000 / averageInterval;
        }
        lastFrameAt = now;
        state.frames += 1;
        state.source = "camera";
        rawDetections = detections;
        applyThreshold();
        showSpeed();
        if (state.frames % logEvery === 0) {
          log({ frames: state.frames, fps: Number(state.fps.toFixed(2)),
            inferenceMs: Number(state.inferenceMs.toFixed(1)), backend: state.backend, numTensors: state.numTensors,
            detections: state.lastDetections.slice(0, 10) });
        }
      }
      await nextFrame();
    }
  }

  async function toCamera() {
    mode = "camera";
    loopToken += 1;
    const token = loopToken;
    ui.image.hidden = true;
    ui.video.hidden = false;
    ui.camera.disabled = true;
    rawDetections = [];
    applyThreshold();
    lastFrameAt = null;
    averageInterval = null;
    setStatus("Starting the camera…");
    try {
      await startCamera();
    } catch (error) {
      showError(cameraError(error));
      setStatus("No camera: drop an image or choose a file to run the detector.");
      ui.camera.disabled = false;
      return;
    }
    if (token !== loopToken) return;
    clearError();
    setStatus(`Detecting on the camera (${ui.video.videoWidth}×${ui.video.videoHeight}).`);
    cameraLoop(token);
  }

  // ---- images -------------------------------------------------------------------------------------------------

  async function toImage(file) {
    if (!state.ready) return;
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name}: not an image (${file.type})`);
      return;
    }
    mode = "image";
    loopToken += 1;
    const url = URL.createObjectURL(file);
    try {
      ui.image.src = url;
      await ui.image.decode();
    } catch (error) {
      showError(`${file.name}: the browser could not decode this image`);
      return;
    } finally {
      setTimeout(() => URL.revokeObjectURL(url), 0);
    }
    ui.video.hidden = true;
    ui.image.hidden = false;
    ui.camera.disabled = false;
    let detections;
    try {
      detections = await detect(ui.image);
    } catch (error) {
      showError(`Detection failed on the ${state.backend} backend: ${describe(error)}`);
      return;
    }
    clearError();
    state.images += 1;
    state.source = "image";
    rawDetections = detections;
    applyThreshold();
    showSpeed();
    setStatus(`Detections on ${file.name} (${ui.image.naturalWidth}×${ui.image.naturalHeight}).`);
    log({ event: "image", file: file.name, inferenceMs: Number(state.inferenceMs.toFixed(1)),
      detections: state.lastDetections.slice(0, 10) });
  }

  // ---- controls -----------------------------------------------------------------------------------------------

  function setupControls() {
    const initial = parseFloat(params.get("threshold"));
    if (initial >= 0 && initial <= 1) ui.threshold.value = String(initial);
    const onThreshold = () => {
      state.threshold = parseFloat(ui.threshold.value);
      ui["threshold-value"].textContent = state.threshold.toFixed(2);
      applyThreshold();
    };
    ui.threshold.addEventListener("input", onThreshold);
    onThreshold();

    ui.file.addEventListener("change", () => {
      const file = ui.file.files && ui.file.files[0];
      ui.file.value = "";
      toImage(file);
    });
    ui.camera.addEventListener("click", () => toCamera());

    let depth = 0;
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
      if (files && files.length) toImage(files[0]);
    });
    window.addEventListener("resize", draw);
    window.addEventListener("unhandledrejection", (event) => showError(`Unexpected error: ${describe(event.reason)}`));
  }

  async function main() {
    setupControls();
    try {
      await loadModel();
    } catch (error) {
      ui.backend.textContent = state.backend || "none";
      setStatus("The page cannot run the detector.");
      showError(describe(error));
      return;
    }
    await toCamera();
  }

  main();
})();
