// The page side of driftbench's TF.js backends.
//
// Python keeps this page open per backend and calls `driftbench.runJob(specJson)` for
// each job; what carries over between jobs is TF.js's own state (the backend,
// compiled WebGL programs) and the loaded models (keptModel), never a job's tensors. Tensors
// never travel as JSON numbers: a job's inputs come as raw little-endian float32 bytes
// (inline in its spec as base64 when small, else in one GET) and its outputs go back the
// same way in one POST, so what Python compares is bit for bit what TF.js computed.
'use strict';

const WEBGL_FLAGS = [
  'WEBGL_VERSION', 'WEBGL_RENDER_FLOAT32_ENABLED', 'WEBGL_PACK',
  'WEBGL_FORCE_F16_TEXTURES', 'WEBGL_CPU_FORWARD',
];

function webglRenderer() {
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
  if (!gl) return null;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  return gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER);
}

// A page serves one backend with one set of flags: once they are active, a job finds
// them so (setting the backend again re-runs the setup of each of its kernels).
let activeKey = null;

async function activateBackend(backend, flags) {
  const key = JSON.stringify([backend, flags]);
  if (activeKey === key && tf.getBackend() === backend) return;
  for (const [name, value] of Object.entries(flags)) tf.env().set(name, value);
  if (backend === 'wasm') tf.wasm.setWasmPaths('/tfjs/wasm/');
  let activated = false;
  try {
    activated = await tf.setBackend(backend);
    await tf.ready();
  } catch (error) {
    throw new Error(`TF.js backend '${backend}' failed to start: ${error.message}`);
  }
  if (!activated || tf.getBackend() !== backend) {
    throw new Error(`TF.js backend '${backend}' did not activate (active: ${tf.getBackend()}); ` +
                    'driftbench never falls back to another backend');
  }
  activeKey = key;
}

// A page's environment cannot change (its backend and flags are the same for every job
// of it): asked once, since asking WebGL for its renderer makes a new context (3 ms).
const environments = new Map();

async function pageEnvironment(backend) {
  if (!environments.has(backend)) environments.set(backend, await environment(backend));
  return environments.get(backend);
}

async function environment(backend) {
  const env = {
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    user_agent: navigator.userAgent,
    cross_origin_isolated: self.crossOriginIsolated === true,
  };
  if (backend === 'webgl') {
    env.webgl_renderer = webglRenderer();
    env.flags = Object.fromEntries(WEBGL_FLAGS.map((flag) => [flag, tf.env().get(flag)]));
  }
  if (backend === 'wasm') {
    env.wasm_simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    env.wasm_threads = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
  }
  return env;
}

// Every output in one POST, in order (Python splits them by their shapes): one request
// instead of one per layer. The page does not wait for the answer: Python waits for the
// body to arrive and learns there of a refusal, so the answer's way back through the
// browser is off the job (512 KB: 6.6-8.4 -> 5.1-5.7 ms from Python, Chromium 156). A Blob copies
// the values as it is made; XMLHttpRequest, not fetch: with the same Blob awaited, fetch's
// promise settled 2-5 ms after XHR's load event.
function sendAllFloat32(url, values) {
  const request = new XMLHttpRequest();
  request.open('POST', url);
  request.send(new Blob(values));
}

// Every weight read back from TF.js, compared bit for bit with the file we served.
async function weightsRoundTrip(model, modelUrl) {
  const manifest = (await (await fetch(modelUrl)).json()).weightsManifest[0];
  const base = modelUrl.slice(0, modelUrl.lastIndexOf('/') + 1);
  const bytes = await (await fetch(base + manifest.paths[0])).arrayBuffer();
  const expected = {};
  let offset = 0;
  for (const spec of manifest.weights) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    expected[spec.name] = new Uint32Array(bytes, offset, size);
    offset += size * 4;
  }
  const differing = [];
  let checked = 0;
  for (const variable of model.weights) {
    const want = expected[variable.originalName];
    if (want === undefined) {
      differing.push({name: variable.originalName, problem: 'not in the weights file'});
      continue;
    }
    const got = new Uint32Array((await variable.read().data()).buffer);
    let nDiff = 0;
    for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) nDiff++;
    checked++;
    if (nDiff > 0 || got.length !== want.length) {
      differing.push({name: variable.originalName, n_diff: nDiff, n: want.length});
    }
  }
  return {checked, identical: differing.length === 0 && checked === manifest.weights.length,
          differing};
}

// Every input of the job, concatenated in order: kept from an earlier job of the page
// with the same inputs (Python sends them only when it does not know them kept), else
// inline in the spec when Python put them there (a request costs about 2 ms here), else
// in one GET. The last KEPT_INPUTS sets that Python names (inputsKey, null for a set too
// big to keep) stay: a service runs a model on one input set again and again, and the
// floor a job is measured against holds its inputs too.
const KEPT_INPUTS = 2;
const keptInputs = new Map();  // inputs key -> Float32Array

async function jobInputs(spec) {
  if (spec.inputsKey === undefined) throw new Error('the job has no inputsKey (null: not kept)');
  let values = spec.inputsKey === null ? undefined : keptInputs.get(spec.inputsKey);
  const kept = values !== undefined;
  if (kept) {
    keptInputs.delete(spec.inputsKey);
  } else if (spec.inputsBase64 !== null) {
    values = float32FromBase64(spec.inputsBase64);
  } else {
    const response = await fetch(`${spec.jobUrl}/inputs`);
    if (!response.ok) throw new Error(`GET ${spec.jobUrl}/inputs: HTTP ${response.status}`);
    values = new Float32Array(await response.arrayBuffer());
  }
  if (spec.inputsKey !== null) keptInputs.set(spec.inputsKey, values);
  while (keptInputs.size > KEPT_INPUTS) keptInputs.delete(keptInputs.keys().next().value);
  return {values, kept};
}

function float32FromBase64(text) {
  const bytes = Uint8Array.fromBase64(text);
  return new Float32Array(bytes.buffer, 0, bytes.length / 4);
}

function tensorsAt(values, placed) {
  return placed.map((place) => {
    const size = place.shape.reduce((a, b) => a * b, 1);
    return tf.tensor(values.subarray(place.offset, place.offset + size), place.shape, 'float32');
  });
}

// Loaded models stay in the page for the jobs after (predicting never changes a model):
// a model's first job pays for its load and its weights' first upload to the backend,
// the jobs after it only for their own work. Beyond KEPT_MODELS, the least recently
// used is disposed. Capture models share the loaded model's layers and weights.
const KEPT_MODELS = 2;
const keptModels = new Map();  // model URL -> {model, captures: layer list -> capture}

async function keptModel(url) {
  let entry = keptModels.get(url);
  keptModels.delete(url);
  if (entry === undefined) {
    entry = {model: await tf.loadLayersModel(url), captures: new Map(), jobs: 0};
    while (keptModels.size >= KEPT_MODELS) {
      const [oldest, evicted] = keptModels.entries().next().value;
      keptModels.delete(oldest);
      evicted.model.dispose();
    }
  }
  keptModels.set(url, entry);
  entry.jobs += 1;
  return entry;
}

function captureOf(entry, names) {
  const key = names.join('\u0000');
  if (!entry.captures.has(key)) {
    const layers = names.map((name) => entry.model.getLayer(name));
    entry.captures.set(
        key, tf.model({inputs: entry.model.inputs, outputs: layers.map((l) => l.output)}));
  }
  return entry.captures.get(key);
}

// The spec comes and the result goes back as JSON text: Playwright carries an object
// as a tree of typed values, converted at each hop (Python, its driver, the page), and a
// job's spec and environment took 2.0 and 0.9 ms more that way than as one string each
// (an evaluate with no argument took 1.9-3.0 ms in all).
async function runJob(specJson) {
  const spec = JSON.parse(specJson);
  const started = performance.now();
  await activateBackend(spec.backend, spec.flags);
  const entry = await keptModel(spec.modelUrl);
  const model = entry.model;
  const loaded = performance.now();
  const shapes = [];
  const computeStarted = performance.now();
  const {values, kept: inputsKept} = await jobInputs(spec);
  const fetched = performance.now();
  const steps = {inputs: fetched - computeStarted};
  if (spec.mode === 'accumulated') {
    const capture = captureOf(entry, spec.layers);
    const inputs = tensorsAt(values, spec.inputs);
    let outputs = capture.predict(inputs.length === 1 ? inputs[0] : inputs,
                                  {batchSize: spec.batchSize});
    if (!Array.isArray(outputs)) outputs = [outputs];
    const outputValues = await Promise.all(outputs.map((output) => output.data()));
    const predicted = performance.now();
    sendAllFloat32(`${spec.jobUrl}/outputs`, outputValues);
    shapes.push(...outputs.map((output) => output.shape));
    Object.assign(steps, {predict: predicted - fetched,
                          send_outputs: performance.now() - predicted});
    tf.dispose([inputs, outputs]);
  } else {
    const outputValues = [];
    for (let i = 0; i < spec.layers.length; i++) {
      const inputs = tensorsAt(values, spec.isolatedInputs[i]);
      // A node exported as several TF.js layers is their chain; each step's inputs are
      // the node's own inputs (by index) or an earlier step's output (by layer name).
      const made = {};
      let output;
      for (const step of spec.isolatedSteps[i]) {
        const args = step.inputs.map((ref) => (typeof ref === 'number' ? inputs[ref] : made[ref]));
        const kwargs = step.mask === undefined ? {} : {mask: inputs[step.mask]};
        output = model.getLayer(step.layer).apply(args.length === 1 ? args[0] : args, kwargs);
        made[step.layer] = output;
      }
      outputValues.push(await output.data());
      shapes.push(output.shape);
      tf.dispose([inputs, Object.values(made)]);
    }
    sendAllFloat32(`${spec.jobUrl}/outputs`, outputValues);
  }
  const finished = performance.now();
  // After the compute, so weights a GPU backend uploaded are read back from its textures.
  // Python asks for it once per model and backend: the same export loads the same way.
  const roundTrip = spec.checkWeights ? await weightsRoundTrip(model, spec.modelUrl) : null;
  const checked = performance.now();
  return JSON.stringify({
    shapes,
    environment: {
      ...(await pageEnvironment(spec.backend)),
      weights_roundtrip: roundTrip,
      model_kept: entry.jobs > 1,
      inputs_kept: inputsKept,
      page_ms: {model_load: loaded - started, compute: finished - computeStarted, ...steps,
                weights_roundtrip: checked - finished},
    },
  });
}

window.driftbench = {runJob, activateBackend};
