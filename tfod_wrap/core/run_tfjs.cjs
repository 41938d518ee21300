// Run a TF.js graph model in Node with the wasm backend (or pure-JS cpu), the way the browser runs it.
//
//   node run_tfjs.cjs REQUEST.json
//
// REQUEST: {"modules": node_modules folder, "model": TF.js folder (model.json + metadata.json),
//           "backend": "wasm" | "cpu", "repeat": N, "inputs": [{"data": raw pixels file, "shape": [h, w, 3]}],
//           "output": folder}
// Writes OUTPUT/result.json: per input, each output tensor by name as {"file", "shape"} (little-endian float32),
// plus latencies in ms. tfjs-node cannot be installed here (its install script downloads libtensorflow), so this
// uses the same @tensorflow/tfjs the web page uses, and loads the model from memory.
"use strict";
const fs = require("fs");
const path = require("path");

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const tf = require(path.join(request.modules, "@tensorflow/tfjs"));
  if (request.backend === "wasm") {
    require(path.join(request.modules, "@tensorflow/tfjs-backend-wasm"));
  }
  if (!(await tf.setBackend(request.backend))) throw new Error(`backend ${request.backend} failed to start`);
  await tf.ready();

  const metadata = JSON.parse(fs.readFileSync(path.join(request.model, "metadata.json"), "utf8"));
  const model = await tf.loadGraphModel(tf.io.fromMemory(readArtifacts(request.model)));
  const outputNames = Object.keys(metadata.outputs);
  const tensorNames = outputNames.map((name) => metadata.outputs[name].tensor);

  const results = [];
  for (const [index, input] of request.inputs.entries()) {
    const pixels = new Uint8Array(fs.readFileSync(input.data));
    const image = tf.tensor(pixels, [1, ...input.shape], "int32");
    const batch = metadata.input.dtype === "float32" ? tf.cast(image, "float32") : image;
    const latencies = [];
    let outputs;
    for (let run = 0; run < Math.max(1, request.repeat || 1); run++) {
      if (outputs) tf.dispose(outputs);
      const start = performance.now();
      outputs = await model.executeAsync({ [metadata.input.name]: batch }, tensorNames);
      await Promise.all(outputs.map((tensor) => tensor.data()));
      latencies.push(performance.now() - start);
    }
    const written = {};
    for (const [position, name] of outputNames.entries()) {
      const file = path.join(request.output, `${index}-${name}.bin`);
      const values = await outputs[position].data();
      fs.writeFileSync(file, Buffer.from(new Float32Array(values).buffer));
      written[name] = { file, shape: outputs[position].shape };
    }
    tf.dispose([image, batch, ...outputs]);
    results.push({ outputs: written, latency_ms: latencies });
  }
  const report = { backend: tf.getBackend(), tfjs: tf.version.tfjs, results };
  fs.writeFileSync(path.join(request.output, "result.json"), JSON.stringify(report));
}

function readArtifacts(folder) {
  const model = JSON.parse(fs.readFileSync(path.join(folder, "model.json"), "utf8"));
  const buffers = [];
  const weightSpecs = [];
  for (const group of model.weightsManifest) {
    for (const shard of group.paths) buffers.push(fs.readFileSync(path.join(folder, shard)));
    weightSpecs.push(...group.weights);
  }
  const weights = Buffer.concat(buffers);
  return {
    modelTopology: model.modelTopology,
    format: model.format,
    generatedBy: model.generatedBy,
    convertedBy: model.convertedBy,
    signature: model.signature,
    userDefinedMetadata: model.userDefinedMetadata,
    weightSpecs,
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
  };
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
