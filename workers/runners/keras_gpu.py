"""`keras-gpu` and `keras-gpu-fp32`: Keras on a GPU, in a child process of their own.

`keras-gpu` keeps the framework's default precision, as users get it (TensorFlow
and JAX run float32 matmuls in TF32 on Ampere and later GPUs); `keras-gpu-fp32`
switches TF32 and the other reduced-precision paths off, so the difference between
the two is the precision mode's share of the drift. The child stays warm across
jobs; with no GPU it reports why, and the backend is 'skipped', never run on a CPU
(unless the test-only setting DRIFTBENCH_GPU_ALLOW_CPU_FOR_TESTS says so).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import threading
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from app.config import settings
from workers.gpu_child import FRAMEWORKS, installed, serve
from workers.model_loading import ModelArtifact
from workers.runners.base import (
    BackendFailed,
    BackendUnavailable,
    LayerInputs,
    LayerOutputs,
    Runner,
)

START_TIMEOUT_S = 300


class GpuChild:
    def __init__(self, framework: str, fp32: bool, allow_cpu: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=serve,
            args=(child_end, framework, fp32, allow_cpu, os.getpid()),
            daemon=True,
            name="keras-gpu",
        )
        self.process.start()
        child_end.close()
        self.hello = self._receive(START_TIMEOUT_S)

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        if not self.connection.poll(timeout_s):
            self.stop()
            raise BackendFailed(f"keras-gpu child gave no answer within {timeout_s:.0f} s")
        try:
            return self.connection.recv()
        except EOFError:
            self.stop()
            raise BackendFailed(f"keras-gpu child exited (code {self.process.exitcode})") from None

    def request(self, *message: Any) -> list[np.ndarray]:
        self.connection.send(message)
        answer = self._receive(settings.backend_time_limit_s)
        if "error" in answer:
            raise BackendFailed(f"keras-gpu: {answer['error']}")
        return answer["outputs"]

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.connection.send(None)
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)


_children: dict[tuple[str, bool, bool], GpuChild] = {}
_children_lock = threading.Lock()


def _stop_children() -> None:
    for child in _children.values():
        child.stop()


atexit.register(_stop_children)


class KerasGpuRunner(Runner):
    BACKEND: ClassVar[str] = "keras-gpu"
    QUEUE: ClassVar[str] = "gpu"
    NEEDS_GPU: ClassVar[bool] = True
    FP32: ClassVar[bool] = False

    @classmethod
    def availability(cls) -> str | None:
        """A cheap look (no framework import): a framework installed and a GPU device node."""
        if not any(installed(framework) for framework in FRAMEWORKS):
            return f"none of {', '.join(FRAMEWORKS)} is installed"
        if not settings.gpu_allow_cpu_for_tests and not list(Path("/dev").glob("nvidia[0-9]*")):
            return "no GPU visible: no /dev/nvidia* device on this machine"
        return None

    def activate_impl(self) -> None:
        key = (settings.gpu_framework, self.FP32, settings.gpu_allow_cpu_for_tests)
        with _children_lock:
            child = _children.get(key)
            if child is None or not child.alive:
                child = _children[key] = GpuChild(*key)
        if "unavailable" in child.hello:
            raise BackendUnavailable(child.hello["unavailable"])
        self._child = child

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        names = [layer.name for layer in model.graph.compute_layers]
        feeds = [inputs[layer.name] for layer in model.graph.inputs]
        outputs = self._child.request("accumulated", str(model.path), names, feeds)
        return dict(zip(names, outputs, strict=True))

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        names = [layer.name for layer in model.graph.compute_layers]
        outputs = self._child.request(
            "isolated", str(model.path), names, [layer_inputs[name] for name in names]
        )
        return dict(zip(names, outputs, strict=True))

    def environment(self) -> dict[str, Any]:
        return dict(self._child.hello["environment"])


class KerasGpuFp32Runner(KerasGpuRunner):
    BACKEND: ClassVar[str] = "keras-gpu-fp32"
    FP32: ClassVar[bool] = True
