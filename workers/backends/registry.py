"""The one lookup point for backends: one line per backend, imported only when used.

Validating a backend id or routing its job needs only the line (the API and the
broker never load TensorFlow or Playwright for it); the runner's module is imported
the first time a runner is made or its availability asked. An unknown id fails
loudly, listing the valid ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from workers.engine.errors import InvalidRequest
from workers.engine.external import external_backend, is_external

if TYPE_CHECKING:
    from workers.backends.base import Runner

Capability = Literal["cpu", "browser", "gpu"]
# The arithmetic a backend is meant to do: what its drift is judged against (see
# workers.diagnosis.precision). A bug is a layer beyond its backend's precision.
Precision = Literal["float64", "float32", "tf32", "float16", "bfloat16", "int8"]
CAPABILITIES: tuple[Capability, ...] = ("cpu", "browser", "gpu")


@dataclass(frozen=True)
class BackendEntry:
    id: str
    runner: str  # "module:Class"
    queue: Capability  # the kind of worker (job process, Celery queue) that runs it
    # In a run that names no backends. keras-jax (a JAX child process of its own) and
    # the TFLite forms (a conversion each) are asked for by name.
    by_default: bool = True
    precision: Precision = "float32"

    def runner_class(self) -> type[Runner]:
        module, name = self.runner.split(":")
        runner: type[Runner] = getattr(importlib.import_module(module), name)
        return runner


REGISTRY: dict[str, BackendEntry] = {
    entry.id: entry
    for entry in (
        BackendEntry("keras-cpu", "workers.backends.keras_cpu:KerasCpuRunner", "cpu"),
        BackendEntry("numpy", "workers.backends.numpy.runner:NumpyRunner", "cpu"),
        BackendEntry(
            "numpy-f64", "workers.backends.numpy.runner:NumpyF64Runner", "cpu", precision="float64"
        ),
        BackendEntry("tfjs-cpu", "workers.backends.tfjs.runner:TfjsCpuRunner", "browser"),
        BackendEntry("tfjs-wasm", "workers.backends.tfjs.runner:TfjsWasmRunner", "browser"),
        BackendEntry("tfjs-webgl", "workers.backends.tfjs.runner:TfjsWebglRunner", "browser"),
        BackendEntry(
            "tfjs-webgl-f16",
            "workers.backends.tfjs.runner:TfjsWebglF16Runner",
            "browser",
            precision="float16",
        ),
        BackendEntry(
            "keras-jax", "workers.backends.keras_gpu.runner:KerasJaxRunner", "cpu", by_default=False
        ),
        BackendEntry(
            "tflite", "workers.backends.tflite.runner:TfliteRunner", "cpu", by_default=False
        ),
        BackendEntry(
            "tflite-f16",
            "workers.backends.tflite.runner:TfliteF16Runner",
            "cpu",
            by_default=False,
            precision="float16",
        ),
        BackendEntry(
            "tflite-dynamic",
            "workers.backends.tflite.runner:TfliteDynamicRunner",
            "cpu",
            by_default=False,
            precision="int8",
        ),
        BackendEntry(
            "tflite-int8",
            "workers.backends.tflite.runner:TfliteInt8Runner",
            "cpu",
            by_default=False,
            precision="int8",
        ),
        BackendEntry("c", "workers.backends.c.runner:CRunner", "cpu", by_default=False),
        BackendEntry(
            "c-fastmath", "workers.backends.c.runner:CFastmathRunner", "cpu", by_default=False
        ),
        BackendEntry(
            "keras-gpu", "workers.backends.keras_gpu.runner:KerasGpuRunner", "gpu", precision="tf32"
        ),
        BackendEntry(
            "keras-gpu-fp32", "workers.backends.keras_gpu.runner:KerasGpuFp32Runner", "gpu"
        ),
    )
}
BACKEND_IDS: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_BACKENDS: tuple[str, ...] = tuple(b for b, entry in REGISTRY.items() if entry.by_default)
DEFAULT_REFERENCE = "numpy-f64"


class UnknownBackend(InvalidRequest):
    """A backend id outside the registry."""


def backend_entry(backend: str) -> BackendEntry:
    try:
        return REGISTRY[backend]
    except KeyError:
        raise UnknownBackend(
            f"unknown backend {backend!r}; valid backends: {', '.join(BACKEND_IDS)}"
        ) from None


def comparable_backend(backend: str) -> str:
    """A backend a run's rows can name: one of the registry's, or an external upload's
    'ext:<name>' (which nothing runs)."""
    if is_external(backend):
        return external_backend(backend)
    backend_entry(backend)
    return backend


def backend_precision(backend: str) -> Precision:
    """An external port is judged as float32, the precision of the model it reproduces."""
    return "float32" if is_external(backend) else backend_entry(backend).precision


def runner_class(backend: str) -> type[Runner]:
    return backend_entry(backend).runner_class()


def parse_backends(text: str) -> list[str]:
    """A comma-separated backend list, each id checked, order kept, duplicates dropped."""
    backends = [item.strip() for item in text.split(",") if item.strip()]
    for backend in backends:
        backend_entry(backend)
    return list(dict.fromkeys(backends))
