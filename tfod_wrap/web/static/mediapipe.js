// The TFLite export on MediaPipe Tasks' ObjectDetector (XNNPACK on wasm, one thread): the page's fastest runtime
// on a CPU. It reads the labels and the input normalisation from the metadata that `tfod-wrap export` embeds in
// model.tflite, so the page tells it nothing about the model. The module and its wasm come from vendor/mediapipe/,
// the model from model/tflite/, both beside the page; nothing from another origin (index.html's
// Content-Security-Policy also stops MediaPipe's usage logging, which would post to a Google server).

import { describe } from "./state.js";

const MODULE = "./vendor/mediapipe/vision_bundle.mjs";
const WASM = "vendor/mediapipe/wasm/vision_wasm_internal"; // the SIMD build: .js loader and .wasm binary
const MODEL = "model/tflite/model.tflite";

// An absolute address: MediaPipe loads its wasm from a script of its own, with no page to resolve against.
const absolute = (path) => new URL(path, document.baseURI).href;

// Width and height of the picture a detection's pixel box refers to.
function pictureSize(source) {
  if (source.videoWidth) return [source.videoWidth, source.videoHeight];
  if (source.naturalWidth) return [source.naturalWidth, source.naturalHeight];
  return [source.width, source.height];
}

export class MediaPipeDetector {
  // metadata: the TF.js export's metadata.json (its classes: ids 1-based, as the label map; MediaPipe's category
  // index is 0-based, line N of the embedded labels.txt).
  constructor(metadata) {
    this.classNames = new Map(metadata.classes.map((entry) => [Number(entry.id), String(entry.name)]));
    // MediaPipe names each detection's class by its label (its category index is -1 for this model's outputs)
    this.classIds = new Map(metadata.classes.map((entry) => [String(entry.name), Number(entry.id)]));
    this.task = null;
  }

  // The ObjectDetector on the model, run once on a blank picture: a browser that loads it but cannot run it
  // fails here, and the page falls back to TF.js.
  async load() {
    let vision;
    try {
      vision = await import(MODULE);
    } catch (error) {
      throw new Error(`${MODULE} did not load (${describe(error)})`);
    }
    if (!(await vision.FilesetResolver.isSimdSupported())) {
      throw new Error("this browser's WebAssembly has no SIMD, which the served MediaPipe build needs");
    }
    const fileset = { wasmLoaderPath: absolute(`${WASM}.js`), wasmBinaryPath: absolute(`${WASM}.wasm`) };
    // Every detection the model returns, as the TF.js path gives them: the page's score threshold filters them
    // (its slider then needs no new run), and the model's own post-processing caps their number.
    this.task = await vision.ObjectDetector.createFromOptions(fileset, {
      baseOptions: { modelAssetPath: absolute(MODEL), delegate: "CPU" },
      runningMode: "IMAGE",
      scoreThreshold: 0,
      maxResults: -1,
    });
    const blank = document.createElement("canvas");
    blank.width = 64;
    blank.height = 48;
    blank.getContext("2d").fillRect(0, 0, 64, 48);
    this.task.detect(blank);
  }

  // {detections: [{classId, name, score, box: [ymin, xmin, ymax, xmax] normalised}], inferenceMs}, best first, as
  // the TF.js detector returns them. MediaPipe gives boxes in pixels of the picture it was given.
  async detect(source) {
    const start = performance.now();
    const result = this.task.detect(source);
    const inferenceMs = performance.now() - start;
    const [width, height] = pictureSize(source);
    const detections = result.detections.map((found) => {
      const category = found.categories[0];
      const classId = this.classIds.get(category.categoryName) ?? category.index + 1;
      const { originX, originY, width: boxWidth, height: boxHeight } = found.boundingBox;
      return {
        classId,
        name: this.classNames.get(classId) || category.categoryName || `class ${classId}`,
        score: category.score,
        box: [originY / height, originX / width, (originY + boxHeight) / height, (originX + boxWidth) / width],
      };
    });
    detections.sort((a, b) => b.score - a.score);
    return { detections, inferenceMs };
  }
}
