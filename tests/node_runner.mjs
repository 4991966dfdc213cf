// Run ONNX models in onnxruntime-node for tests/test_portability.py.
//
//   node tests/node_runner.mjs NODE_DIR MANIFEST.json
//
// NODE_DIR holds node_modules/onnxruntime-node. The manifest lists jobs:
//   {"jobs": [{"model": "a.onnx", "runs": [{"inputs": [TENSOR...], "out": "dir"}]}]}
// with TENSOR = {"name", "type", "dims", "file"} (raw little-endian data; bool as one byte,
// float16 as its bits). Each run writes its outputs to OUT/<index>.bin and OUT/outputs.json
// (a list of TENSOR in the model's output order), or OUT/error.txt when it fails.
// Prints the versions as one JSON line.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [nodeDir, manifestPath] = process.argv.slice(2);
const require = createRequire(join(nodeDir, 'package.json'));
const ort = require('onnxruntime-node');

const ARRAYS = {
  float32: Float32Array, float16: Uint16Array, float64: Float64Array,
  int64: BigInt64Array, int32: Int32Array, bool: Uint8Array,
};

function readTensor(t) {
  const Arr = ARRAYS[t.type];
  if (!Arr) throw new Error(`unsupported input type ${t.type}`);
  const raw = readFileSync(t.file);
  const copy = new Uint8Array(raw.byteLength);  // aligned copy for the typed array
  copy.set(raw);
  return new ort.Tensor(t.type, new Arr(copy.buffer, 0, raw.byteLength / Arr.BYTES_PER_ELEMENT),
    t.dims);
}

const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
const options = { executionProviders: ['cpu'], logSeverityLevel: 3 };
for (const job of manifest.jobs) {
  let session = null;
  let loadError = null;
  try {
    session = await ort.InferenceSession.create(job.model, options);
  } catch (err) {
    loadError = err;
  }
  for (const run of job.runs) {
    mkdirSync(run.out, { recursive: true });
    for (const stale of ['error.txt', 'outputs.json']) rmSync(join(run.out, stale), { force: true });
    try {
      if (loadError) throw loadError;
      const feeds = {};
      for (const t of run.inputs) feeds[t.name] = readTensor(t);
      const results = await session.run(feeds);
      const outputs = session.outputNames.map((name, i) => {
        const value = results[name];
        const data = value.data;
        const file = join(run.out, `${i}.bin`);
        writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        return { name, type: value.type, dims: Array.from(value.dims), file };
      });
      writeFileSync(join(run.out, 'outputs.json'), JSON.stringify(outputs));
    } catch (err) {
      writeFileSync(join(run.out, 'error.txt'), String(err && err.stack ? err.stack : err));
    }
  }
  if (session) await session.release();
}
console.log(JSON.stringify(ort.env.versions));
