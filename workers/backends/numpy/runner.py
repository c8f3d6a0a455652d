"""`numpy` and `numpy-f64`: our own port of each layer, in float32 and in float64.

The float64 port is the default reference: the same code as the float32 port,
so where they disagree the cause is float32 rounding, not a different algorithm.
"""

from __future__ import annotations

import platform
from typing import Any, ClassVar

import numpy as np
import scipy
from threadpoolctl import threadpool_info

from workers.backends.base import (
    BackendUnsupported,
    LayerInputs,
    LayerOutputs,
    Runner,
    unsupported_label,
)
from workers.backends.numpy.activations import UnknownActivation, activation_name, get_activation
from workers.backends.numpy.layers import LayerConfigUnsupported
from workers.backends.numpy.port import LAYERS
from workers.engine.graph import LayerSpec
from workers.engine.loading import ModelArtifact

ACTIVATION_KEYS = ("activation",)


class NumpyRunner(Runner):
    BACKEND: ClassVar[str] = "numpy"
    OUTPUT_DTYPE: ClassVar[type[np.floating[Any]]] = np.float32

    def layer_unsupported(self, layer: LayerSpec) -> str | None:
        label = unsupported_label(layer)
        if layer.class_name not in LAYERS:
            return label
        for key in ACTIVATION_KEYS:
            if key in layer.config:
                try:
                    get_activation(layer.config[key])
                except UnknownActivation:
                    return f"{label} activation {activation_name(layer.config[key])!r}"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"numpy": np.__version__, "scipy": scipy.__version__}

    def activate_impl(self) -> None:
        """The BLAS threads this process runs with, read once (1.4 ms a read)."""
        self._blas_threads = [
            pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"
        ]

    def _apply(self, layer: LayerSpec, inputs: list[np.ndarray]) -> np.ndarray:
        """The layer at the runner's precision; weights already in it are used as they are
        (no layer writes to its weights; copying cifar_cnn's took 1.5 of 50 ms a job)."""
        weights = {
            key: value.astype(self.OUTPUT_DTYPE, copy=False) for key, value in layer.weights.items()
        }
        try:
            out = LAYERS[layer.class_name](inputs, layer.config, weights)
        except LayerConfigUnsupported as error:
            raise BackendUnsupported(f"{unsupported_label(layer)} {error}") from error
        return np.asarray(out, dtype=self.OUTPUT_DTYPE)

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        values: LayerOutputs = dict(inputs)
        for layer in model.graph.compute_layers:
            values[layer.name] = self._apply(layer, [values[name] for name in layer.inbound])
        return values

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        return {
            layer.name: self._apply(layer, layer_inputs[layer.name])
            for layer in model.graph.compute_layers
        }

    def environment(self) -> dict[str, Any]:
        return {
            "dtype": np.dtype(self.OUTPUT_DTYPE).name,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "blas": _blas_name(),
            # A reduction split over threads sums in another order: other bits.
            "blas_threads": self._blas_threads,
            "machine": platform.machine(),
        }


class NumpyF64Runner(NumpyRunner):
    BACKEND: ClassVar[str] = "numpy-f64"
    OUTPUT_DTYPE: ClassVar[type[np.floating[Any]]] = np.float64


def _blas_name() -> str:
    config = np.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
