// The probe page: runs the run's model with TF.js on this device, on every backend the
// browser offers, and posts each layer's output (raw float32 bytes, never JSON numbers)
// back to driftbench as ext:probe/<device>/<backend>, with what explains its numbers:
// the GPU, whether it renders float32, the precision of a highp float in a fragment
// shader, and TF.js's flags.
'use strict';

const config = JSON.parse(document.getElementById('probe-config').textContent);

function say(text) {
  const item = document.createElement('li');
  item.textContent = text;
  document.getElementById('progress').appendChild(item);
}

function slug(text) {
  return String(text || 'device').toLowerCase().replace(/[^a-z0-9._+-]+/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '').slice(0, 40) || 'device';
}

function defaultDevice() {
  const platform = (navigator.userAgentData && navigator.userAgentData.platform) ||
      navigator.platform;
  const browser = /Firefox\//.test(navigator.userAgent) ? 'firefox' :
      /Edg\//.test(navigator.userAgent) ? 'edge' :
      /Chrom(e|ium)\//.test(navigator.userAgent) ? 'chrome' :
      /Safari\//.test(navigator.userAgent) ? 'safari' : 'browser';
  return slug(`${platform}-${browser}`);
}

function graphics() {
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
  if (!gl) return null;
  const debug = gl.getExtension('WEBGL_debug_renderer_info');
  const highp = gl.getShaderPrecisionFormat(gl.FRAGMENT_SHADER, gl.HIGH_FLOAT);
  return {
    vendor: gl.getParameter(debug ? debug.UNMASKED_VENDOR_WEBGL : gl.VENDOR),
    renderer: gl.getParameter(debug ? debug.UNMASKED_RENDERER_WEBGL : gl.RENDERER),
    version: gl.getParameter(gl.VERSION),
    fragment_highp_float: highp &&
        {precision: highp.precision, range_min: highp.rangeMin, range_max: highp.rangeMax},
  };
}

async function environment(backend) {
  const env = {
    tfjs: tf.version.tfjs,
    backend,
    user_agent: navigator.userAgent,
    hardware_concurrency: navigator.hardwareConcurrency,
    webgl: graphics(),
    flags: tf.env().getFlags(),
  };
  if (backend === 'webgl') {
    env.webgl_render_float32_capable = await tf.env().getAsync('WEBGL_RENDER_FLOAT32_CAPABLE');
  }
  if (backend === 'webgpu' && navigator.gpu) {
    const adapter = await navigator.gpu.requestAdapter();
    env.webgpu_adapter = adapter && adapter.info ?
        {vendor: adapter.info.vendor, architecture: adapter.info.architecture} : null;
  }
  return env;
}

async function activate(backend) {
  if (backend === 'wasm') tf.wasm.setWasmPaths(`${config.assets}/`);
  if (backend === 'webgpu' && !navigator.gpu) return 'this browser has no WebGPU';
  try {
    if (!(await tf.setBackend(backend))) return 'did not start';
    await tf.ready();
  } catch (error) {
    return error.message;
  }
  return tf.getBackend() === backend ? null : `${tf.getBackend()} started instead`;
}

async function inputTensors() {
  return Promise.all(config.inputs.map(async (input) => {
    const response = await fetch(input.url);
    if (!response.ok) throw new Error(`GET ${input.url}: HTTP ${response.status}`);
    return tf.tensor(new Float32Array(await response.arrayBuffer()), input.shape, 'float32');
  }));
}

async function measure(backend, device) {
  const problem = await activate(backend);
  if (problem) {
    say(`${backend}: skipped (${problem})`);
    return 'skipped';
  }
  const started = performance.now();
  const model = await tf.loadLayersModel(config.modelUrl);
  const capture = tf.model({
    inputs: model.inputs,
    outputs: config.layers.map((layer) => model.getLayer(layer.tfjs).output),
  });
  const inputs = await inputTensors();
  let outputs = capture.predict(inputs.length === 1 ? inputs[0] : inputs);
  if (!Array.isArray(outputs)) outputs = [outputs];
  const form = new FormData();
  const layers = [];
  for (let i = 0; i < outputs.length; i++) {
    const values = await outputs[i].data();
    layers.push({name: config.layers[i].node, shape: outputs[i].shape});
    form.append(`layer${i}`, new Blob([values.buffer]));
  }
  const env = await environment(backend);
  env.compute_ms = performance.now() - started;
  form.append('meta', JSON.stringify({backend, device, environment: env, layers}));
  tf.dispose([inputs, outputs]);
  model.dispose();
  const response = await fetch(config.postUrl, {method: 'POST', body: form});
  const answer = await response.json();
  if (!response.ok) throw new Error(`${backend}: HTTP ${response.status}: ${answer.detail}`);
  say(`${backend}: sent ${layers.length} layers as ${answer.backend}`);
  return 'sent';
}

async function run() {
  const status = document.getElementById('status');
  const device = slug(document.getElementById('device').value);
  status.dataset.state = 'running';
  status.textContent = 'measuring…';
  const outcome = {};
  try {
    for (const backend of config.backends) {
      say(`${backend}: running`);
      outcome[backend] = await measure(backend, device);
    }
    status.dataset.state = 'done';
    status.textContent = `done: ${JSON.stringify(outcome)}`;
  } catch (error) {
    status.dataset.state = 'failed';
    status.textContent = `failed: ${error.message}`;
  }
}

document.getElementById('device').value = defaultDevice();
document.getElementById('start').addEventListener('click', run);
