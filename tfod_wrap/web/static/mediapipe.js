// The TFLite export on MediaPipe Tasks' ObjectDetector (XNNPACK on wasm): the page's fastest runtime on a CPU. It reads
// the labels and the input normalisation from the metadata that `tfod-wrap export` embeds in model.tflite, so the page
// tells it nothing about the model. The module and its wasm come from vendor/mediapipe/, the model from model/tflite/,
// both beside the page; nothing from another origin (index.html's Content-Security-Policy also stops MediaPipe's usage
// logging, which would post to a Google server).
//
// MediaPipe's web build runs a model on one thread, so the detector runs it in dedicated workers, one per slot: with
// two, the camera loop keeps two frames in flight and two cores busy. ?workers=N sets their number (default: 2, or 1
// on a one-core machine); ?workers=0, or workers that fail to start, run it on the page's own thread.

import { createObjectDetector, labelsOf, toDetections } from "./mediapipe_task.js";
import { describe, log, params } from "./state.js";

const MODULE = "vendor/mediapipe/vision_bundle.mjs";
const MODEL = "model/tflite/model.tflite";
// The SIMD build as a classic script for the page's thread, as an ES module for workers (which cannot load classic
// scripts the way MediaPipe does on a page); the two wasm binaries are the same build.
const WASM = {
  page: "vendor/mediapipe/wasm/vision_wasm_internal",
  worker: "vendor/mediapipe/wasm/vision_wasm_module_internal",
};
const MAX_WORKERS = 8;

const absolute = (path) => new URL(path, document.baseURI).href;

function files(where) {
  return { module: absolute(MODULE), loader: absolute(`${WASM[where]}.js`), binary: absolute(`${WASM[where]}.wasm`),
    model: absolute(MODEL) };
}

// The workers' files fetched once by the page, as blob: addresses every worker reads from memory: two workers would
// otherwise download the 13 MB wasm and the model twice. Their blobs keep the server's content types, which module
// imports and wasm streaming compilation check.
async function fetchOnce(urls) {
  const blobs = await Promise.all(Object.values(urls).map(async (url) => {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.blob();
  }));
  // addresses only once every fetch succeeded, so a failed one leaves none to revoke
  return Object.fromEntries(Object.keys(urls).map((key, index) => [key, URL.createObjectURL(blobs[index])]));
}

// ?workers=N, else 2 (1 on a one-core machine).
export function workerCount() {
  const asked = params.get("workers");
  if (asked === null) return Math.min(2, navigator.hardwareConcurrency || 1);
  const count = Number(asked);
  if (!Number.isInteger(count) || count < 0 || count > MAX_WORKERS) {
    throw new Error(`?workers=${asked}: expected a whole number from 0 to ${MAX_WORKERS}`);
  }
  return count;
}

// Width and height of the picture a detection's pixel box refers to.
function pictureSize(source) {
  if (source.videoWidth) return [source.videoWidth, source.videoHeight];
  if (source.naturalWidth) return [source.naturalWidth, source.naturalHeight];
  return [source.width, source.height];
}

// A worker running one ObjectDetector (mediapipe_worker.js). It starts from a blob: address that imports the
// worker's module: a worker from a blob: address keeps the page's Content-Security-Policy, one from the module's own
// address would not, and MediaPipe's logging would reach Google from there.
class TaskWorker {
  constructor() {
    const source = `import ${JSON.stringify(absolute("mediapipe_worker.js"))};`;
    const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    this.worker = new Worker(url, { type: "module" });
    URL.revokeObjectURL(url);
    this.replies = new Map(); // id -> {resolve, reject}
    this.nextId = 0;
    this.worker.onmessage = ({ data }) => this.reply(data);
    this.worker.onerror = (event) => this.fail(event.message || "the worker failed to start");
  }

  load(shared, classes) {
    return this.request({ type: "load", files: shared, classes }, []);
  }

  detect(bitmap) {
    return this.request({ type: "detect", bitmap }, [bitmap]);
  }

  get pending() {
    return this.replies.size;
  }

  request(message, transfer) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.replies.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id }, transfer);
    });
  }

  reply(data) {
    const waiting = this.replies.get(data.id);
    if (!waiting) return;
    this.replies.delete(data.id);
    if (data.type === "failed") waiting.reject(new Error(data.error));
    else waiting.resolve(data);
  }

  fail(message) {
    for (const waiting of this.replies.values()) waiting.reject(new Error(message));
    this.replies.clear();
  }

  terminate() {
    this.worker.terminate();
    this.fail("the worker was stopped");
  }
}

export class MediaPipeDetector {
  // metadata: the TF.js export's metadata.json (its classes name the detections).
  constructor(metadata) {
    this.classes = metadata.classes;
    this.labels = labelsOf(metadata.classes);
    this.workers = [];
    this.task = null;
  }

  // How many detections may run at once: the camera loop keeps that many frames in flight.
  get slots() {
    return this.workers.length || 1;
  }

  // The workers asked for, each with its ObjectDetector loaded; else (none asked, or they fail) the page's thread.
  async load() {
    const wanted = workerCount();
    if (wanted > 0) {
      const workers = [];
      let shared = {};
      try {
        shared = await fetchOnce(files("worker"));
        workers.push(...Array.from({ length: wanted }, () => new TaskWorker()));
        await Promise.all(workers.map((worker) => worker.load(shared, this.classes)));
        this.workers = workers;
        return;
      } catch (error) {
        workers.forEach((worker) => worker.terminate());
        log({ event: "mediapipe-workers-failed", error: describe(error) });
      } finally {
        Object.values(shared).forEach((url) => URL.revokeObjectURL(url));
      }
    }
    this.task = await createObjectDetector(files("page"));
  }

  // {detections, inferenceMs}: inferenceMs is the whole call, picture capture and the way to a worker included.
  async detect(source) {
    const start = performance.now();
    let detections;
    if (this.workers.length) {
      const bitmap = await createImageBitmap(source);
      const worker = this.workers.reduce((best, next) => (next.pending < best.pending ? next : best));
      ({ detections } = await worker.detect(bitmap));
    } else {
      const [width, height] = pictureSize(source);
      detections = toDetections(this.task.detect(source), width, height, this.labels);
    }
    return { detections, inferenceMs: performance.now() - start };
  }
}
