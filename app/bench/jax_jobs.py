"""keras-jax against Keras on JAX itself: the warm job (`run_backend` with the pool's warm
runner: its JAX child process, the inputs sent through its pipe and every layer's output
handed back in a shared-memory file) against a JAX process of the bench's own that already
holds the capture model and the inputs, predicting when asked and handing every layer's
output back the fastest way measured, the same shared-memory file (through the pipe,
pickled, the outputs cost more than half of `predict` again): the least Keras on JAX
needs to put every layer's output in the caller's hands. The first job (the child's
start, its imports, the model's load and first trace) is reported beside it, untargeted.

Keras picks its backend once per process, at import, and this process's is TensorFlow: the
floor has a process of its own, like the job, asked over a pipe, like the job.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from app.bench.backend_jobs import backend_job, example_job
from app.bench.figures import Figure, interleaved, ratio, timed
from workers.backends.keras_gpu.shared_outputs import receive_arrays, send_arrays
from workers.backends.pool import RunnerPool
from workers.backends.registry import runner_class
from workers.processes.lifetime import die_with_parent

BACKEND = "keras-jax"
BATCH = 64
START_TIMEOUT_S = 300
PREDICT_TIMEOUT_S = 120


def predict_on_request(
    connection: Connection, model_path: str, feeds: list[np.ndarray], parent_pid: int
) -> None:
    """The floor's process: Keras on JAX on the CPU, the capture model loaded and the
    inputs held; one `predict` per request, answered with its outputs, or with None when
    asked to keep them."""
    die_with_parent(parent_pid)
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import keras

    from workers.engine.loading import load_keras_model
    from workers.engine.unroll import capture_model

    capture = capture_model(keras, load_keras_model(Path(model_path), keras)).model
    batch = feeds if len(feeds) > 1 else feeds[0]
    connection.send(None)
    while (request := connection.recv()) is not None:
        outputs = capture.predict(batch, verbose=0)
        if request == "keep":
            connection.send(None)
        else:
            send_arrays(connection, outputs if isinstance(outputs, list) else [outputs], parent_pid)


class JaxFloor:
    """The floor's process, its model loaded once built (its first predict is the
    caller's warm-up); one that dies or hangs is an error naming it, never a hung bench."""

    def __init__(self, model_path: Path, feeds: list[np.ndarray]) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=predict_on_request,
            args=(child_end, str(model_path), feeds, os.getpid()),
            daemon=True,
            name="bench-jax-floor",
        )
        self.process.start()
        child_end.close()
        self._answer(START_TIMEOUT_S, "start")

    def _answer(self, timeout_s: float, doing: str) -> Any:
        try:
            if not self.connection.poll(timeout_s):
                raise TimeoutError(f"did not {doing} in {timeout_s} s")
            answer = self.connection.recv()
            if answer is not None:
                return receive_arrays(self.connection, answer, timeout_s)
        except (EOFError, OSError, TimeoutError) as error:
            self.close()
            raise RuntimeError(
                f"the Keras-on-JAX floor failed to {doing} ({error or type(error).__name__}; "
                f"exit code {self.process.exitcode})"
            ) from None
        return None

    def predict(self) -> list[np.ndarray]:
        """Every layer's output, in the capture model's order."""
        self.connection.send("deliver")
        outputs: list[np.ndarray] = self._answer(PREDICT_TIMEOUT_S, "predict")
        return outputs

    def predict_kept(self) -> None:
        """The old floor: the outputs stay in the floor's process."""
        self.connection.send("keep")
        self._answer(PREDICT_TIMEOUT_S, "predict")

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.connection.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


def jax_figures(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    reason = runner_class(BACKEND).availability(pool.options)
    if reason is not None:
        return [Figure(f"{BACKEND}: not measured", 0.0, "", detail={"reason": reason})]
    artifact, inputs = example_job("cifar_cnn", BATCH, directory, pool.options)
    job = backend_job(pool, BACKEND, artifact, inputs)
    first = timed(job, 1, warmup=0)[0]
    floor = JaxFloor(artifact.path, [inputs[layer.name] for layer in artifact.graph.inputs])
    try:
        measured, baseline = interleaved(job, floor.predict, repeats)
        kept = timed(floor.predict_kept, repeats)
    finally:
        floor.close()
    figure = ratio(
        f"{BACKEND} job vs Keras-on-JAX predict in a warm process, every output handed back "
        f"(cifar_cnn, batch {BATCH})",
        measured,
        baseline,
        1.3,
    )
    figure.detail |= {"first_job_s": first, **pool.runner(BACKEND).environment()}
    old = ratio(
        f"{BACKEND} job vs the same predict, outputs left in that process "
        f"(cifar_cnn, batch {BATCH})",
        measured,
        kept,
        None,
    )
    return [figure, old]
