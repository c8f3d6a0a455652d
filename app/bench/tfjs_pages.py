"""TF.js: a warm driftbench job against the warm floor, the least TF.js itself needs to
give every layer's output: in the backend's own warm page (TF.js initialised, shaders
compiled), the capture model already loaded and the input already a tensor, one
`predict` and every output read back with `data()`, timed from Python like a job.

The old baseline, a fresh page that initialises the backend, loads the model.json and
predicts once, is reported beside it (cold, untargeted), and so is the first job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page

from app.bench.backend_jobs import backend_job, example_job
from app.bench.figures import Figure, interleaved, median, ratio, timed
from workers.backends.pool import RunnerPool
from workers.backends.registry import runner_class
from workers.backends.tfjs.export import tfjs_names
from workers.backends.tfjs.runner import TfjsRunner
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


WARM_CAPTURE = """async (spec) => {
  const model = await tf.loadLayersModel(spec.modelUrl);
  const layers = spec.layers.map((name) => model.getLayer(name));
  window.benchFloor = {
    model: tf.model({inputs: model.inputs, outputs: layers.map((layer) => layer.output)}),
    input: tf.randomUniform(spec.shape),
    batchSize: spec.batchSize,
  };
}"""

PREDICT_WARM = """async () => {
  const floor = window.benchFloor;
  let outputs = floor.model.predict(floor.input, {batchSize: floor.batchSize});
  if (!Array.isArray(outputs)) outputs = [outputs];
  await Promise.all(outputs.map((output) => output.data()));
  tf.dispose(outputs);
}"""


def tfjs_runner(pool: RunnerPool, backend: str) -> TfjsRunner:
    """The pool's warm runner of a TF.js backend (the browser the jobs run in)."""
    runner = pool.runner(backend)
    if not isinstance(runner, TfjsRunner):
        raise TypeError(f"{backend} is not a TF.js backend")
    return runner


# A cold page costs the same every time (a fresh page each): two untargeted timings,
# no warm-up; with the warm figures' five and a warm-up they took 110 s of make bench.
COLD_REPEATS = 2


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


def warm_page(runner: TfjsRunner, artifact: ModelArtifact, shape: list[int]) -> Callable[[], None]:
    """The floor: predict the capture model in the runner's own warm page (loaded there
    once, first) and read every output back."""
    names = tfjs_names(artifact.graph)
    spec = {
        "modelUrl": runner.model_url(artifact),
        "layers": [names[layer.name] for layer in runner.computed_layers(artifact.graph)],
        "shape": shape,
        "batchSize": runner.options.tfjs_batch_size,
    }
    harness = f"{runner.session.server.url}/harness.html"
    timeout_s = runner.options.browser_job_timeout_s

    async def prepare(page: Page, _: int) -> None:
        await page.evaluate(WARM_CAPTURE, spec)

    async def predict(page: Page, _: int) -> None:
        await page.evaluate(PREDICT_WARM)

    runner.host.run_in_page(runner.BACKEND, harness, prepare, timeout_s=timeout_s)
    return lambda: runner.host.run_in_page(runner.BACKEND, harness, predict, timeout_s=timeout_s)


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
        floor = warm_page(runner, artifact, shape)
        warm, baseline = interleaved(job, floor, repeats)
        figure = ratio(
            f"{backend} warm job vs warm page (predict, read every output) "
            f"({model}, batch {batch})",
            warm,
            baseline,
            1.3,
        )
        figure.detail["first_job_s"] = first
        figures.append(figure)
        figures.append(
            Figure(
                f"{backend} warm job vs cold bare page, the old baseline ({model}, batch {batch})",
                median(warm) / cold_page,
                "x",
                detail={"measured_s": median(warm), "baseline_s": cold_page},
            )
        )
    return figures
