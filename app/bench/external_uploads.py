"""An external port's outputs: `POST /api/runs/{id}/external` of a saved .npz until its 201
(checked against the run's shapes, stored, compared with the reference layer by layer and
diagnosed) against the same check by hand, the least a person comparing their port needs:
both .npz files loaded and each layer's largest absolute error and relative L2 error
computed in float64.

Untargeted: the upload also stores the outputs and tests causes on the layers that drift
(reading the model in a child process), which a check by hand does not; the figure says
what that costs. The port here is our numpy port, a faithful one, on the run's own inputs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.bench.backend_jobs import example_job
from app.bench.end_to_end import served
from app.bench.figures import Figure, interleaved, ratio
from workers.backends.pool import RunnerPool
from workers.backends.registry import DEFAULT_REFERENCE

MODEL, BATCH = "cifar_cnn", 64


def _by_hand(port: Path, reference: Path) -> Callable[[], None]:
    def check() -> None:
        with np.load(port) as ours, np.load(reference) as theirs:
            for layer in theirs.files:
                want = theirs[layer].astype(np.float64)
                error = ours[layer].astype(np.float64) - want
                float(np.max(np.abs(error)))
                float(np.linalg.norm(error) / max(np.linalg.norm(want), np.finfo(float).tiny))

    return check


def external_figures(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    artifact, inputs = example_job(MODEL, BATCH, directory, pool.options)
    files = {}
    for backend in ("numpy", DEFAULT_REFERENCE):
        outputs = pool.runner(backend).run(artifact, inputs)
        files[backend] = directory / f"external-{backend}.npz"
        np.savez(files[backend], **outputs)
    upload = files["numpy"].read_bytes()
    with served(directory / "external") as server, server.client(timeout_s=600) as client:
        model = client.upload_model(artifact.path)
        input_set = client.upload_inputs(model["id"], inputs)
        run = client.start_run(
            model_id=model["id"], input_set_id=input_set["id"], backends=[DEFAULT_REFERENCE]
        )
        client.wait_for_run(run["id"], timeout_s=600)

        def post() -> None:
            answer = client.post(
                f"/api/runs/{run['id']}/external",
                files={"file": ("port.npz", io.BytesIO(upload))},
                data={"name": "bench-port"},
            )
            if answer.status_code != 201:
                raise RuntimeError(f"external upload answered {answer.status_code}: {answer.text}")

        measured, baseline = interleaved(
            post, _by_hand(files["numpy"], files[DEFAULT_REFERENCE]), repeats
        )
    figure = ratio(
        f"external upload to 201 (stored, compared, diagnosed) vs the check by hand "
        f"({MODEL}, batch {BATCH})",
        measured,
        baseline,
        None,
    )
    figure.detail["upload_bytes"] = len(upload)
    return [figure]
