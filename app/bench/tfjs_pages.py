"""TF.js: a warm driftbench job against a bare page that loads the same model.json and
predicts once, in the same Chromium; the cold first job is reported on its own.

Both open a fresh browser context and page, as every job does, so the ratio is what
driftbench adds: capturing every layer, moving tensors as raw bytes, reading the
weights back to check the export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext

from app.bench.backend_jobs import backend_job, example_job
from app.bench.figures import Figure, ratio, timed
from workers.backends.pool import RunnerPool
from workers.backends.registry import runner_class
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


def tfjs_runner(pool: RunnerPool, backend: str) -> TfjsRunner:
    """The pool's warm runner of a TF.js backend (the browser the jobs run in)."""
    runner = pool.runner(backend)
    if not isinstance(runner, TfjsRunner):
        raise TypeError(f"{backend} is not a TF.js backend")
    return runner


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
        job = backend_job(pool, backend, artifact, inputs)
        cold = timed(job, 1, warmup=0)
        warm = timed(job, repeats, warmup=0)
        baseline = timed(bare_page(tfjs_runner(pool, backend), artifact, shape), repeats)
        figures.append(
            ratio(f"{backend} warm job vs bare page ({model}, batch {batch})", warm, baseline, 1.5)
        )
        figures.append(
            Figure(
                f"{backend} cold first job ({model}, batch {batch})",
                cold[0],
                "s",
                detail={
                    "note": "the first TF.js job of the process also starts Chromium"
                    if backend == TFJS_BACKENDS[0]
                    else "Chromium already running"
                },
            )
        )
    return figures
