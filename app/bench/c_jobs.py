"""The C backends against their compiled program: each warm job (`run_backend` with the
pool's warm runner, the build kept) against the same program run by hand on an inputs
file already written, the least a person running the port needs. The first job (the
source generated and compiled) is reported beside it, untargeted."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from app.bench.backend_jobs import backend_job, example_job
from app.bench.figures import Figure, interleaved, ratio, timed
from workers.backends.c.runner import CRunner, write_float32
from workers.backends.pool import RunnerPool

C_BACKENDS = ("c", "c-fastmath")
BATCH = 16  # 2 s a run at 64, of which make bench ran 25


def _by_hand(binary: Path, samples: int, inputs: Path, outputs: Path) -> Callable[[], None]:
    def run() -> None:
        command = [str(binary), "accumulated", str(samples), str(inputs), str(outputs)]
        subprocess.run(command, check=True, capture_output=True)

    return run


def c_figures(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    artifact, inputs = example_job("cifar_cnn", BATCH, directory, pool.options)
    figures = []
    for backend in C_BACKENDS:
        reason = CRunner.availability(pool.options)
        if reason is not None:
            figures.append(Figure(f"{backend}: not measured", 0.0, "", detail={"reason": reason}))
            continue
        job = backend_job(pool, backend, artifact, inputs)
        first = timed(job, 1, warmup=0)[0]
        runner = pool.runner(backend)
        assert isinstance(runner, CRunner)
        feeds = directory / f"{backend}-inputs.f32"
        write_float32(feeds, [inputs[layer.name] for layer in artifact.graph.inputs])
        by_hand = _by_hand(
            runner.program(artifact), BATCH, feeds, directory / f"{backend}-outputs.f32"
        )
        measured, baseline = interleaved(job, by_hand, repeats)
        figure = ratio(
            f"{backend} job vs its compiled port run by hand (cifar_cnn, batch {BATCH})",
            measured,
            baseline,
            1.3,
        )
        figure.detail |= {"first_job_s": first, **runner.environment()}
        figures.append(figure)
    return figures
