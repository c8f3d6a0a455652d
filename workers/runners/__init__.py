"""The one lookup point for backends: an unknown id fails loudly, listing the valid ones."""

from __future__ import annotations

from workers.runners.base import Runner
from workers.runners.keras_cpu import KerasCpuRunner
from workers.runners.keras_gpu import KerasGpuFp32Runner, KerasGpuRunner
from workers.runners.numpy_ref import NumpyF64Runner, NumpyRunner
from workers.runners.tfjs_browser import (
    TfjsCpuRunner,
    TfjsWasmRunner,
    TfjsWebglF16Runner,
    TfjsWebglRunner,
)

RUNNERS: dict[str, type[Runner]] = {
    runner.BACKEND: runner
    for runner in (
        KerasCpuRunner,
        NumpyRunner,
        NumpyF64Runner,
        TfjsCpuRunner,
        TfjsWasmRunner,
        TfjsWebglRunner,
        TfjsWebglF16Runner,
        KerasGpuRunner,
        KerasGpuFp32Runner,
    )
}
BACKEND_IDS: tuple[str, ...] = tuple(RUNNERS)
DEFAULT_REFERENCE = "numpy-f64"


class UnknownBackend(ValueError):
    """A backend id outside the registry."""


def runner_class(backend: str) -> type[Runner]:
    try:
        return RUNNERS[backend]
    except KeyError:
        raise UnknownBackend(
            f"unknown backend {backend!r}; valid backends: {', '.join(BACKEND_IDS)}"
        ) from None


def parse_backends(text: str) -> list[str]:
    """A comma-separated backend list, each id checked, order kept, duplicates dropped."""
    backends = [item.strip() for item in text.split(",") if item.strip()]
    for backend in backends:
        runner_class(backend)
    return list(dict.fromkeys(backends))
