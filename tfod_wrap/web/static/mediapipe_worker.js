// One MediaPipe ObjectDetector in a dedicated worker (mediapipe.js starts one per slot). MediaPipe's web build runs on
// one thread, so frames given to two workers run on two cores at once.
//
// Messages in:  {type: "load", id, files, classes}; then {type: "detect", id, bitmap} (an ImageBitmap, transferred).
// Messages out: {type: "loaded", id}, {type: "detections", id, detections, ms} or {type: "failed", id, error}.

import { createObjectDetector, labelsOf, toDetections } from "./mediapipe_task.js";

let task = null;
let labels = null;

function errorText(error) {
  return error && error.message ? error.message : String(error);
}

async function load({ id, files, classes }) {
  try {
    labels = labelsOf(classes);
    task = await createObjectDetector(files);
    self.postMessage({ type: "loaded", id });
  } catch (error) {
    self.postMessage({ type: "failed", id, error: errorText(error) });
  }
}

function detect({ id, bitmap }) {
  try {
    const start = performance.now();
    const result = task.detect(bitmap);
    const ms = performance.now() - start;
    const detections = toDetections(result, bitmap.width, bitmap.height, labels);
    self.postMessage({ type: "detections", id, detections, ms });
  } catch (error) {
    self.postMessage({ type: "failed", id, error: errorText(error) });
  } finally {
    bitmap.close();
  }
}

self.onmessage = ({ data }) => (data.type === "load" ? load(data) : detect(data));
