"""`keras-cpu`: Keras 3 on TensorFlow, GPUs hidden, every layer captured in one predict.

The capture model is the loaded model with every layer's output made an output,
so the numbers come from the same graph a user's `model.predict` runs, batched by
`DRIFTBENCH_KERAS_BATCH_SIZE`: each batch through `predict_on_batch`, the compiled
function `predict` calls on each batch, without the tf.data pipeline `predict`
builds anew on every call (about 60 ms of its 64 on dense10x50 at batch 256, where
the batch itself takes 1.3 ms; the outputs are bit-identical). Whether oneDNN is on
changes the kernels (and the rounding), so it is recorded. The runner keeps its last
loaded models while it is active (a pool keeps it active across jobs): loading a
model and tracing its predict function cost more than predicting.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from workers.backends.base import (
    LayerInputs,
    LayerOutputs,
    Runner,
    package_version,
    unsupported_label,
)
from workers.backends.kept import Kept
from workers.engine.graph import LayerSpec
from workers.engine.keras_env import import_keras, onednn_enabled
from workers.engine.loading import ModelArtifact, load_keras_model
from workers.engine.options import EngineOptions
from workers.engine.unroll import KerasCapture, capture_model

NCHW_UNSUPPORTED_ON_CPU = frozenset({"Conv1D", "Conv2D", "Conv2DTranspose"})
ONEDNN_ONLY_TRANSPOSED = frozenset({"Conv1DTranspose", "Conv3DTranspose"})
MODELS_KEPT = 2


@dataclass(frozen=True)
class LoadedModel:
    """A model's all-nodes capture; `lock` keeps one job at a time on it."""

    capture: KerasCapture
    lock: threading.Lock


def predict_in_batches(model: Any, feed: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Each output of `model.predict(feed, batch_size=batch_size)`, batch by batch as
    `predict` slices them, through the same compiled predict function."""
    samples = len(feed[0])
    per_batch = []
    for start in range(0, samples, batch_size):
        batch = [x[start : start + batch_size] for x in feed]
        outputs = model.predict_on_batch(batch if len(batch) > 1 else batch[0])
        per_batch.append(outputs if isinstance(outputs, list) else [outputs])
    if len(per_batch) == 1:  # as predict: one batch's outputs as they are
        return per_batch[0]
    # As predict joins them: a scalar per batch stacked, the rest along the samples.
    return [
        np.stack(parts) if parts[0].ndim == 0 else np.concatenate(parts)
        for parts in zip(*per_batch, strict=True)
    ]


class KerasCpuRunner(Runner):
    BACKEND: ClassVar[str] = "keras-cpu"

    @classmethod
    def availability(cls, options: EngineOptions) -> str | None:
        if importlib.util.find_spec("tensorflow") is None:
            return "TensorFlow is not installed"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {name: package_version(name) for name in ("tensorflow", "keras")}

    def layer_unsupported(self, layer: LayerSpec) -> str | None:
        """TensorFlow's CPU kernels lack two cases that Keras passes straight through."""
        config = layer.config
        label = unsupported_label(layer)
        if (
            layer.class_name in NCHW_UNSUPPORTED_ON_CPU
            and config.get("data_format") == "channels_first"
        ):
            return (
                f"{label} data_format channels_first: "
                "TensorFlow has no NCHW convolution kernel on the CPU"
            )
        dilation = config.get("dilation_rate", 1)
        dilated = any(d != 1 for d in np.atleast_1d(dilation))
        if layer.class_name == "Conv2DTranspose" and dilated:
            return (
                f"{label} dilation_rate {tuple(np.atleast_1d(dilation))}: "
                "TensorFlow's CPU transposed convolution does not implement dilation"
            )
        if (
            layer.class_name in ONEDNN_ONLY_TRANSPOSED
            and (dilated or config.get("data_format") == "channels_first")
            and not onednn_enabled()
        ):
            return (
                f"{label} dilation or channels_first: TensorFlow's CPU runs this transposed "
                "convolution with oneDNN only (TF_ENABLE_ONEDNN_OPTS=0 here)"
            )
        return None

    def activate_impl(self) -> None:
        self._keras = import_keras(self.options.onednn)
        import tensorflow as tf

        self._tf = tf
        self._loaded: Kept[str, LoadedModel] = Kept(MODELS_KEPT)

    def deactivate_impl(self) -> None:
        self._loaded.clear()

    def loaded_model(self, model: ModelArtifact) -> LoadedModel:
        """The loaded copy of the model, kept for the last MODELS_KEPT models."""

        def load() -> LoadedModel:
            keras_model = load_keras_model(model.path, self._keras, self.options)
            return LoadedModel(capture_model(self._keras, keras_model), threading.Lock())

        return self._loaded.get(model.sha256, load)

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        loaded = self.loaded_model(model)
        feed = [inputs[layer.name] for layer in model.graph.inputs]
        with loaded.lock, self._tf.device("/CPU:0"):
            outputs = predict_in_batches(loaded.capture.model, feed, self.options.keras_batch_size)
        return dict(zip(loaded.capture.names, outputs, strict=True))

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        loaded = self.loaded_model(model)
        outputs: LayerOutputs = {}
        with loaded.lock, self._tf.device("/CPU:0"):
            for layer in model.graph.compute_layers:
                feed = [self._tf.constant(x) for x in layer_inputs[layer.name]]
                outputs[layer.name] = np.asarray(loaded.capture.call(layer.name, feed))
        return outputs

    def environment(self) -> dict[str, Any]:
        return {
            "keras": self._keras.__version__,
            "tensorflow": self._tf.__version__,
            "keras_backend": self._keras.backend.backend(),
            "device": "CPU",
            "cpu": platform.processor() or platform.machine(),
            "onednn": onednn_enabled(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)"),
            "intra_op_threads": self._tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": self._tf.config.threading.get_inter_op_parallelism_threads(),
            "batch_size": self.options.keras_batch_size,
        }
