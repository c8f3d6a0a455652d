"""`keras-gpu` and `keras-gpu-fp32`: Keras on a GPU, in a child process of their own.

`keras-gpu` keeps the framework's default precision, as users get it (TensorFlow
and JAX run float32 matmuls in TF32 on Ampere and later GPUs); `keras-gpu-fp32`
switches TF32 and the other reduced-precision paths off, so the difference between
the two is the precision mode's share of the drift. The child stays warm across
jobs; with no GPU it reports why, and the backend is 'skipped', never run on a CPU
(unless the test-only option `gpu_allow_cpu_for_tests` says so). The child is the
runner's own: started on activation, stopped on deactivation.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from workers.backends.base import (
    BackendFailed,
    BackendUnavailable,
    LayerInputs,
    LayerOutputs,
    Runner,
    package_version,
)
from workers.backends.keras_gpu.child import FRAMEWORKS, installed, serve
from workers.backends.keras_gpu.shared_outputs import SentArrays, receive_arrays
from workers.engine.loading import ModelArtifact
from workers.engine.options import EngineOptions

START_TIMEOUT_S = 300


class GpuChild:
    def __init__(
        self, options: EngineOptions, fp32: bool, name: str, cpu_framework: str | None = None
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.time_limit_s = options.backend_time_limit_s
        self.connection, child_end = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=serve,
            args=(child_end, options, fp32, os.getpid(), cpu_framework),
            daemon=True,
            name=name,
        )
        self.process.start()
        child_end.close()
        self.hello = self._receive(START_TIMEOUT_S)

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        if not self.connection.poll(timeout_s):
            self.stop()
            raise BackendFailed(f"{self.name} child gave no answer within {timeout_s:.0f} s")
        try:
            return self.connection.recv()
        except EOFError:
            self.stop()
            raise BackendFailed(
                f"{self.name} child exited (code {self.process.exitcode})"
            ) from None

    def request(self, *message: Any) -> list[np.ndarray]:
        self.connection.send(message)
        answer = self._receive(self.time_limit_s)
        if "error" in answer:
            raise BackendFailed(f"{self.name}: {answer['error']}")
        try:
            return receive_arrays(self.connection, cast(SentArrays, answer), self.time_limit_s)
        except Exception as error:  # the stream is no longer in step: the child goes
            self.stop()
            raise BackendFailed(
                f"{self.name}: its outputs could not be received "
                f"({type(error).__name__}: {error}; child exit code {self.process.exitcode})"
            ) from None

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
        # With it goes any outputs file the child sent that was never mapped.
        self.connection.close()


class KerasGpuRunner(Runner):
    BACKEND: ClassVar[str] = "keras-gpu"
    FP32: ClassVar[bool] = False
    # A framework the child runs on the CPU by design (keras-jax); None: a GPU.
    CPU_FRAMEWORK: ClassVar[str | None] = None

    @classmethod
    def availability(cls, options: EngineOptions) -> str | None:
        """A cheap look (no framework import): a framework installed and a GPU device node."""
        if not any(installed(framework) for framework in FRAMEWORKS):
            return f"none of {', '.join(FRAMEWORKS)} is installed"
        if not options.gpu_allow_cpu_for_tests and not list(Path("/dev").glob("nvidia[0-9]*")):
            return "no GPU visible: no /dev/nvidia* device on this machine"
        return None

    def activate_impl(self) -> None:
        self._child = self._start_child()

    def _start_child(self) -> GpuChild:
        child = GpuChild(self.options, self.FP32, self.BACKEND, self.CPU_FRAMEWORK)
        if "unavailable" in child.hello:
            child.stop()
            raise BackendUnavailable(child.hello["unavailable"])
        return child

    def deactivate_impl(self) -> None:
        self._child.stop()

    def _request(self, *message: Any) -> list[np.ndarray]:
        """A child that died with an earlier job is replaced before this one."""
        if not self._child.alive:
            self._child = self._start_child()
        return self._child.request(*message)

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        names = [layer.name for layer in model.graph.compute_layers]
        feeds = [inputs[layer.name] for layer in model.graph.inputs]
        outputs = self._request("accumulated", str(model.path), names, feeds)
        return dict(zip(names, outputs, strict=True))

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        names = [layer.name for layer in model.graph.compute_layers]
        outputs = self._request(
            "isolated", str(model.path), names, [layer_inputs[name] for name in names]
        )
        return dict(zip(names, outputs, strict=True))

    def environment(self) -> dict[str, Any]:
        return dict(self._child.hello["environment"])


class KerasGpuFp32Runner(KerasGpuRunner):
    BACKEND: ClassVar[str] = "keras-gpu-fp32"
    FP32: ClassVar[bool] = True


class KerasJaxRunner(KerasGpuRunner):
    """`keras-jax`: Keras 3 on JAX on the CPU, through the same child process code as
    keras-gpu (so that path runs for real on every machine). JAX runs channels_first
    convolutions on the CPU, which TensorFlow cannot: the independent check of the
    numpy port there."""

    BACKEND: ClassVar[str] = "keras-jax"
    CPU_FRAMEWORK: ClassVar[str | None] = "jax"

    @classmethod
    def availability(cls, options: EngineOptions) -> str | None:
        return None if installed("jax") else "jax is not installed (make install installs it)"

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {name: package_version(name) for name in ("jax", "jaxlib", "keras")}
