"""TF.js: a warm driftbench job against the warm floor, the least TF.js in a browser
needs to put every layer's output in the hands of the Python that asked: in the
backend's own warm page (TF.js initialised, shaders compiled), the capture model
already loaded and the job's inputs already tensors, one `predict`, every output read
back with `data()` and sent to Python in one POST (the fastest way out of a page
measured: harness.js), timed from Python like a job. The same floor with the outputs
left in the page, which no job can do, is reported beside it, untargeted.

The old baseline, a fresh page that initialises the backend, loads the model.json and
predicts once, is reported beside it (cold, untargeted), and so is the first job.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import BrowserContext, Page

from app.bench.backend_jobs import backend_job, example_job
from app.bench.figures import Figure, interleaved, median, ratio, timed
from workers.backends.pool import RunnerPool
from workers.backends.registry import runner_class
from workers.backends.tfjs.export import tfjs_names
from workers.backends.tfjs.runner import TfjsRunner, placed_inputs
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.loading import ModelArtifact

TFJS_BACKENDS = ("tfjs-cpu", "tfjs-wasm", "tfjs-webgl", "tfjs-webgl-f16")

PREDICT_ONCE = """async (spec) => {
  for (const [name, value] of Object.entries(spec.flags)) tf.env().set(name, value);
  if (spec.backend === 'wasm') tf.wasm.setWasmPaths('/tfjs/wasm/');
  await tf.setBackend(spec.backend);
  await tf.ready();
  const model = await tf.loadLayersModel(spec.modelUrl);
  const x = tf.randomUniform(spec.shape);
  const y = model.predict(x, {batchSize: spec.batchSize});
  await (Array.isArray(y) ? y[y.length - 1] : y).data();
}"""


# The job's own inputs, placed once as tensors (untimed) as a job places them
# (harness.js's tensorsAt), on the backend the job runs on (a page no job has run in yet
# is on TF.js's default): the floor computes the numbers the job does. A floor placed
# before in this page is disposed.
WARM_CAPTURE = """async (spec) => {
  await window.driftbench.activateBackend(spec.backend, spec.flags);
  if (window.benchFloor !== undefined) {
    window.benchFloor.loaded.dispose();
    tf.dispose(window.benchFloor.inputs);
  }
  const loaded = await tf.loadLayersModel(spec.modelUrl);
  const layers = spec.layers.map((name) => loaded.getLayer(name));
  const inputs = tensorsAt(float32FromBase64(spec.inputsBase64), spec.inputs);
  window.benchFloor = {
    loaded,
    inputs,
    model: tf.model({inputs: loaded.inputs, outputs: layers.map((layer) => layer.output)}),
    input: inputs.length === 1 ? inputs[0] : inputs,
    batchSize: spec.batchSize,
  };
}"""

# With an outputs URL, every output is sent to it the way a job sends its own
# (harness.js's sendAllFloat32, the fastest way out of the page measured); without,
# the outputs stay in the page. The shapes come back as JSON text, as a job's answer
# does (harness.js's runJob: the cheapest way through Playwright).
PREDICT_WARM = """async (outputsUrl) => {
  const floor = window.benchFloor;
  let outputs = floor.model.predict(floor.input, {batchSize: floor.batchSize});
  if (!Array.isArray(outputs)) outputs = [outputs];
  const values = await Promise.all(outputs.map((output) => output.data()));
  if (outputsUrl !== null) sendAllFloat32(outputsUrl, values);
  const shapes = outputs.map((output) => output.shape);
  tf.dispose(outputs);
  return JSON.stringify(shapes);
}"""


def tfjs_runner(pool: RunnerPool, backend: str) -> TfjsRunner:
    """The pool's warm runner of a TF.js backend (the browser the jobs run in)."""
    runner = pool.runner(backend)
    if not isinstance(runner, TfjsRunner):
        raise TypeError(f"{backend} is not a TF.js backend")
    return runner


# Calls of a TF.js job and of its floor, in turn, before either is timed: a page's
# JavaScript and wasm are still being optimised over their first calls, the job's code
# apart from the floor's. With one each (the job's first call besides), tfjs-wasm's
# cifar_cnn jobs took 34-48 ms against the floor's 33-34 (1.15x; 1.29-1.32x within make
# bench on a 2-core Intel Xeon), with six 31-36 against 30-37 ms (1.10x), with eleven
# 30-35 against 30-40 ms. Fewer once they have taken WARM_S: a call of hundreds of
# milliseconds (cifar_cnn on tfjs-cpu or WebGL) runs its kernels' loops millions of
# times, optimised within it, and six such pairs took 20 of the TF.js part's 134 s on a
# 2-core AMD EPYC in a slow hour.
WARM_CALLS = 6
WARM_S = 2.0

# A cold page costs the same every time (a fresh page each, 1-4 s): one untargeted
# timing, no warm-up; with the warm figures' five and a warm-up they took 110 s of make
# bench, with two 25 s of a 10-minute run on a 2-core AMD EPYC in a slow hour.
COLD_REPEATS = 1


def bare_page(runner: TfjsRunner, artifact: ModelArtifact, shape: list[int]) -> Callable[[], None]:
    """Load the model's export in a fresh page of the runner's browser and predict once."""
    model_url = runner.model_url(artifact)
    spec = {
        "backend": runner.TFJS_BACKEND,
        "flags": runner.FLAGS,
        "modelUrl": model_url,
        "shape": shape,
        "batchSize": runner.options.tfjs_batch_size,
    }
    base_url = model_url.split("/models/")[0]

    async def in_page(context: BrowserContext) -> Any:
        page = await context.new_page()
        await page.goto(f"{base_url}/bare.html")
        return await page.evaluate(PREDICT_ONCE, spec)

    def once() -> None:
        runner.host.run(in_page, timeout_s=runner.options.browser_job_timeout_s)

    return once


@dataclass(frozen=True)
class WarmPage:
    """The floor, placed once in the runner's own warm page: `delivered` predicts, reads
    every output back and hands them all to Python as float32 arrays (what a job must
    do with them; returned in the job's layer order); `in_page` leaves them there."""

    delivered: Callable[[], list[np.ndarray]]
    in_page: Callable[[], None]


def warm_page(
    runner: TfjsRunner, artifact: ModelArtifact, inputs: dict[str, np.ndarray]
) -> WarmPage:
    """Load the capture model and place `inputs` in the runner's warm page, once (and
    again in a page that replaced it)."""
    names = tfjs_names(artifact.graph)
    tensors = [inputs[layer.name] for layer in artifact.graph.inputs]
    joined = b"".join(np.ascontiguousarray(t, "<f4").tobytes() for t in tensors)
    spec = {
        "backend": runner.TFJS_BACKEND,
        "flags": runner.FLAGS,
        "modelUrl": runner.model_url(artifact),
        "layers": [names[layer.name] for layer in runner.computed_layers(artifact.graph)],
        "inputsBase64": base64.b64encode(joined).decode(),
        "inputs": placed_inputs(tensors),
        "batchSize": runner.options.tfjs_batch_size,
    }
    server = runner.session.server
    harness = f"{server.url}/harness.html"
    timeout_s = runner.options.browser_job_timeout_s

    async def prepare(page: Page, _: int) -> None:
        await page.evaluate(WARM_CAPTURE, spec)

    async def placed(page: Page, served: int) -> None:
        """A page's first job: the page the floor was placed in was replaced (after
        PAGE_JOBS jobs in workers/backends/tfjs/browser_host.py), so place it again."""
        if served == 1:
            await prepare(page, served)

    async def kept(page: Page, served: int) -> None:
        await placed(page, served)
        await page.evaluate(PREDICT_WARM, None)

    def in_page() -> None:
        runner.host.run_in_page(runner.BACKEND, harness, kept, timeout_s=timeout_s)

    def delivered() -> list[np.ndarray]:
        job_id, channel = server.open_job(b"")
        url = f"{server.url}/jobs/{job_id}/outputs"

        async def predict(page: Page, served: int) -> list[list[int]]:
            await placed(page, served)
            return json.loads(await page.evaluate(PREDICT_WARM, url))

        try:
            shapes = runner.host.run_in_page(runner.BACKEND, harness, predict, timeout_s=timeout_s)
            return channel.output_arrays(shapes, timeout_s)
        finally:
            server.close_job(job_id)

    runner.host.run_in_page(runner.BACKEND, harness, prepare, timeout_s=timeout_s)
    return WarmPage(delivered, in_page)


def new_input_sets(artifact: ModelArtifact, batch: int, count: int) -> list[dict[str, np.ndarray]]:
    """Input sets unlike each other and the example job's (seed 0)."""
    shapes = artifact.graph.input_shapes
    return [
        generate_inputs(InputRecipe("uniform", batch=batch, seed=1000 + i), shapes)
        for i in range(count)
    ]


def tfjs_figures(
    directory: Path, repeats: int, model: str, batch: int, pool: RunnerPool
) -> list[Figure]:
    artifact, inputs = example_job(model, batch, directory, pool.options)
    shape = list(next(iter(inputs.values())).shape)
    figures = []
    for backend in TFJS_BACKENDS:
        reason = runner_class(backend).availability(pool.options)
        if reason is not None:
            figures.append(Figure(f"{backend}: not measured", 0.0, "", detail={"reason": reason}))
            continue
        runner = tfjs_runner(pool, backend)
        job = backend_job(pool, backend, artifact, inputs)
        first = timed(job, 1, warmup=0)[0]
        cold_page = median(timed(bare_page(runner, artifact, shape), COLD_REPEATS, warmup=0))
        floor = warm_page(runner, artifact, inputs)
        warm, baseline = interleaved(job, floor.delivered, repeats, WARM_CALLS, WARM_S)
        figure = ratio(
            f"{backend} warm job vs warm page (predict, every output read and sent to Python) "
            f"({model}, batch {batch})",
            warm,
            baseline,
            1.3,
        )
        figure.detail["first_job_s"] = first
        figures.append(figure)
        # The job above finds its inputs kept in its page, as the floor holds them; a
        # job on inputs its page has not seen also sends them.
        jobs = [
            backend_job(pool, backend, artifact, new)
            for new in new_input_sets(artifact, batch, repeats)
        ]
        new_inputs = [timed(new_job, 1, 0)[0] for new_job in jobs]
        figures.append(
            ratio(
                f"{backend} warm job on inputs new to its page vs the same warm page "
                f"({model}, batch {batch})",
                new_inputs,
                baseline,
                None,
            )
        )
        figures.append(
            ratio(
                f"{backend} warm job vs warm page, outputs left in the page "
                f"({model}, batch {batch})",
                warm,
                timed(floor.in_page, repeats),
                None,
            )
        )
        figures.append(
            Figure(
                f"{backend} warm job vs cold bare page, the old baseline ({model}, batch {batch})",
                median(warm) / cold_page,
                "x",
                detail={"measured_s": median(warm), "baseline_s": cold_page},
            )
        )
    return figures
