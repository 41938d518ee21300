// One MediaPipe ObjectDetector in a dedicated worker (mediapipe.js starts one per slot). MediaPipe's web build runs on
// one thread, so frames given to two workers run on two cores at once.
//
// Messages in:  {type: "load", id, files, classes}; then {type: "detect", id, bitmap} (an ImageBitmap, transferred).
// Messages out: {type: "loaded", id}, {type: "detections", id, detections} or {type: "failed", id, error}.

import { createObjectDetector, errorText, labelsOf, toDetections } from "./mediapipe_task.js";

let task = null;
let labels = null;

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
    const detections = toDetections(task.detect(bitmap), bitmap.width, bitmap.height, labels);
    self.postMessage({ type: "detections", id, detections });
  } catch (error) {
    self.postMessage({ type: "failed", id, error: errorText(error) });
  } finally {
    bitmap.close();
  }
}

self.onmessage = ({ data }) => (data.type === "load" ? load(data) : detect(data));
