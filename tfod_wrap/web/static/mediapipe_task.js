// MediaPipe Tasks' ObjectDetector on the export's TFLite model, and its results in the page's terms. Runs on the page's
// own thread and in its workers (mediapipe_worker.js), so nothing here touches the DOM.

// An error as one line of text (the page's state.js `describe` needs the DOM; this does not).
export function errorText(error) {
  return error && error.message ? error.message : String(error);
}

// files: {module, loader, binary, model}, absolute addresses (MediaPipe loads its wasm from a script of its own, with
// no page to resolve against). The task is run once on a blank picture: a browser that loads it but cannot run it
// fails here, and the page falls back to TF.js.
export async function createObjectDetector(files) {
  let vision;
  try {
    vision = await import(files.module);
  } catch (error) {
    throw new Error(`${files.module} did not load (${errorText(error)})`);
  }
  if (!(await vision.FilesetResolver.isSimdSupported())) {
    throw new Error("this browser's WebAssembly has no SIMD, which the served MediaPipe build needs");
  }
  // Every detection the model returns, as the TF.js path gives them: the page's score threshold filters them (its
  // slider then needs no new run), and the model's own post-processing caps their number.
  const task = await vision.ObjectDetector.createFromOptions(
    { wasmLoaderPath: files.loader, wasmBinaryPath: files.binary },
    { baseOptions: { modelAssetPath: files.model, delegate: "CPU" }, runningMode: "IMAGE", scoreThreshold: 0,
      maxResults: -1 },
  );
  task.detect(new ImageData(64, 48));
  return task;
}

// Class names and ids from the TF.js export's metadata.json classes (ids 1-based, as the label map). MediaPipe names
// each detection's class by its label (line N of the embedded labels.txt; its category index is -1 for this model's
// outputs), so the id is found by name.
export function labelsOf(classes) {
  return {
    names: new Map(classes.map((entry) => [Number(entry.id), String(entry.name)])),
    ids: new Map(classes.map((entry) => [String(entry.name), Number(entry.id)])),
  };
}

// MediaPipe's result on a width x height picture as the page's detections: [{classId, name, score, box: [ymin, xmin,
// ymax, xmax] normalised}], best first, as the TF.js detector returns them (MediaPipe's boxes are in pixels).
export function toDetections(result, width, height, labels) {
  const detections = result.detections.map((found) => {
    const category = found.categories[0];
    const classId = labels.ids.get(category.categoryName) ?? category.index + 1;
    const { originX, originY, width: boxWidth, height: boxHeight } = found.boundingBox;
    return {
      classId,
      name: labels.names.get(classId) || category.categoryName || `class ${classId}`,
      score: category.score,
      box: [originY / height, originX / width, (originY + boxHeight) / height, (originX + boxWidth) / width],
    };
  });
  return detections.sort((a, b) => b.score - a.score);
}
