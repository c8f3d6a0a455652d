"""`tflite`, `tflite-f16`, `tflite-dynamic` and `tflite-int8`: the model converted by
TensorFlow's TFLite converter and run by the LiteRT interpreter on the CPU.

How every layer is captured: the converted model is the all-nodes capture model (the
same one keras-cpu predicts with), so each layer's output is an output tensor of the
flatbuffer, dequantized to float32 by the model itself in the int8 forms. Isolated
mode converts one more model, each layer with inputs of its own, fed the reference's
inputs to that layer. A layer made an output cannot be fused into the next op, so the
runner also runs the plain conversion of the model and records, per final output,
whether capture changed it (`capture_perturbation`). Converted models are kept while the
runner is active, keyed by model, mode and (int8) the calibration inputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from workers.backends.base import LayerInputs, LayerOutputs, Runner, package_version
from workers.backends.kept import Kept
from workers.backends.tflite.conversion import (
    DYNAMIC,
    FLOAT16,
    FLOAT32,
    INT8,
    Quantization,
    calibration_count,
    calibration_samples,
    convert,
)
from workers.engine.errors import failure_reason
from workers.engine.keras_env import import_keras
from workers.engine.loading import ModelArtifact, load_keras_model
from workers.engine.options import EngineOptions
from workers.engine.unroll import KerasCapture, capture_model

CONVERTED_KEPT = 6
MODELS_KEPT = 2


class Converted:
    """One flatbuffer in its interpreter; `names[i]` is the layer output `o{i}` holds."""

    def __init__(self, interpreter: Any, names: list[str], quantized: bool) -> None:
        self.interpreter = interpreter
        self.names = names
        self.lock = threading.Lock()
        self.signature = interpreter.get_signature_runner("serve")
        self.output_scales = self._output_scales() if quantized else {}

    def invoke(self, feeds: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            found = self.signature(**{f"i{j}": x for j, x in enumerate(feeds)})
            return {name: np.asarray(found[f"o{i}"]) for i, name in enumerate(self.names)}

    def _output_scales(self) -> dict[str, tuple[float, int]]:
        """Each int8 layer output's (scale, zero point): the quantized tensor the model
        dequantizes into output `o{i}`. The op list is LiteRT's only view of that link
        (a private call): without it the diagnosis reads the grid from the values."""
        details = self.signature.get_output_details()
        try:
            ops = self.interpreter._get_ops_details()
        except AttributeError:
            return {}
        producers = {
            op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"
        }
        tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        scales = {}
        for i, name in enumerate(self.names):
            source = producers.get(details[f"o{i}"]["index"])
            if source is not None and tensors[source]["quantization"][0]:
                scale, zero_point = tensors[source]["quantization"]
                scales[name] = (float(scale), int(zero_point))
        return scales


def _digest(feeds: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for x in feeds:
        digest.update(f"{x.dtype}{x.shape}".encode())
        digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


def _perturbation(plain: np.ndarray, captured: np.ndarray) -> str | dict[str, float]:
    if np.array_equal(plain, captured, equal_nan=True):
        return "bit-identical"
    difference = np.abs(plain.astype(np.float64) - captured)
    scale = float(np.linalg.norm(plain.astype(np.float64)))
    return {
        "max_abs": float(np.max(difference)),
        "rel_l2": float(np.linalg.norm(difference) / scale) if scale else float("inf"),
    }


class TfliteRunner(Runner):
    """float32 TFLite; the subclasses only change the converter's quantization. One
    conversion at a time per runner: a conversion traces Keras layers the runner's
    cached models share."""

    BACKEND: ClassVar[str] = "tflite"
    QUANTIZATION: ClassVar[Quantization] = FLOAT32

    @classmethod
    def availability(cls, options: EngineOptions) -> str | None:
        for module, package in (("tensorflow", "TensorFlow"), ("ai_edge_litert", "ai-edge-litert")):
            if importlib.util.find_spec(module) is None:
                return f"{package} is not installed (make install installs it)"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {name: package_version(name) for name in ("tensorflow", "ai-edge-litert")}

    def activate_impl(self) -> None:
        self._keras = import_keras(self.options.onednn)
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter

        self._tf = tf
        self._interpreter = Interpreter
        self._litert_version = package_version("ai-edge-litert")
        self._captures: Kept[str, tuple[Any, KerasCapture]] = Kept(MODELS_KEPT)
        self._converted: Kept[tuple[str, ...], Converted] = Kept(CONVERTED_KEPT)
        self._perturbations: Kept[tuple[str, str], dict[str, Any]] = Kept(CONVERTED_KEPT)
        self._last = threading.local()

    def deactivate_impl(self) -> None:
        self._captures.clear()
        self._converted.clear()
        self._perturbations.clear()

    def _capture(self, model: ModelArtifact) -> tuple[Any, KerasCapture]:
        def load() -> tuple[Any, KerasCapture]:
            keras_model = load_keras_model(model.path, self._keras, self.options)
            return keras_model, capture_model(self._keras, keras_model)

        return self._captures.get(model.sha256, load)

    def _convert(
        self,
        key: tuple[str, ...],
        graph: Callable[[], tuple[Sequence[Any], Sequence[Any]]],
        names: list[str],
        feeds: Sequence[np.ndarray],
        digest: str | None = None,
    ) -> Converted:
        """The converted model for `key`, its Keras graph (inputs, outputs) built and
        converted on first use; int8 models are keyed by (and calibrated on) the feeds."""
        calibrated = self.QUANTIZATION.calibrated
        if calibrated:
            key = (*key, digest or _digest(feeds))

        def build() -> Converted:
            inputs, outputs = graph()
            flatbuffer = convert(
                self._keras,
                self._tf,
                inputs,
                outputs,
                self.QUANTIZATION,
                calibration_samples(feeds) if calibrated else None,
            )
            return Converted(self._interpreter(model_content=flatbuffer), names, calibrated)

        return self._converted.get(key, build)

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        keras_model, capture = self._capture(model)
        feeds = [inputs[layer.name] for layer in model.graph.inputs]
        digest = _digest(feeds)
        captured = self._convert(
            (model.sha256, "accumulated"),
            lambda: (capture.model.inputs, capture.model.outputs),
            capture.names,
            feeds,
            digest,
        )
        outputs = captured.invoke(feeds)
        self._last.perturbation = self._perturbations.get(
            (model.sha256, digest),
            lambda: self._capture_perturbation(model, keras_model, feeds, digest, outputs),
        )
        self._last.scales = {"accumulated": captured.output_scales}
        self._last.calibration = calibration_count(feeds)
        return outputs

    def _capture_perturbation(
        self,
        model: ModelArtifact,
        keras_model: Any,
        feeds: list[np.ndarray],
        digest: str,
        outputs: LayerOutputs,
    ) -> dict[str, Any]:
        """Per final output, whether the plain conversion of the model gives the same
        values as the capture model on these inputs (computed once per inputs). A plain
        conversion that fails is recorded, not raised: the capture model's numbers stand."""
        try:
            finals = [
                (name, tensor)
                for name, tensor in zip(model.graph.outputs, keras_model.outputs, strict=True)
                if name in outputs
            ]
            plain = self._convert(
                (model.sha256, "plain"),
                lambda: (keras_model.inputs, [tensor for _, tensor in finals]),
                [name for name, _ in finals],
                feeds,
                digest,
            ).invoke(feeds)
        except Exception as error:  # a measurement beside the job, never its failure
            return {"error": f"the plain conversion failed: {failure_reason(error)}"}
        return {name: _perturbation(plain[name], outputs[name]) for name, _ in finals}

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        _, capture = self._capture(model)
        names = [layer.name for layer in model.graph.compute_layers]
        feeds = [x for name in names for x in layer_inputs[name]]
        shapes = ";".join(f"{x.dtype}{x.shape[1:]}" for x in feeds)

        def build() -> tuple[list[Any], list[Any]]:
            inputs: list[Any] = []
            outputs: list[Any] = []
            for name in names:
                own = [
                    self._keras.Input(shape=x.shape[1:], dtype=str(x.dtype))
                    for x in layer_inputs[name]
                ]
                inputs.extend(own)
                outputs.append(capture.call(name, own))
            return inputs, outputs

        converted = self._convert((model.sha256, "isolated", shapes), build, names, feeds)
        self._last.scales = {
            **getattr(self._last, "scales", {}),
            "isolated": converted.output_scales,
        }
        return converted.invoke(feeds)

    def environment(self) -> dict[str, Any]:
        quantization = self.QUANTIZATION
        details: dict[str, Any] = {
            "form": quantization.name,
            "weights": quantization.weights,
            "activations": quantization.activations,
        }
        if quantization.calibrated:
            details["calibration_samples"] = getattr(self._last, "calibration", None)
            # Read by workers.diagnosis.runs.output_grids: each layer's int8 grid.
            details["layer_output_scales"] = getattr(self._last, "scales", None)
        return {
            "converter": f"tensorflow {self._tf.__version__} TFLiteConverter.from_saved_model",
            "interpreter": f"ai-edge-litert {self._litert_version} (LiteRT)",
            "delegate": "XNNPACK (LiteRT's default CPU delegate)",
            "device": "CPU",
            "keras": self._keras.__version__,
            "quantization": details,
            "capture": "converted capture model: every layer's output is a model output",
            "capture_perturbation": getattr(self._last, "perturbation", None),
        }


class TfliteF16Runner(TfliteRunner):
    BACKEND: ClassVar[str] = "tflite-f16"
    QUANTIZATION: ClassVar[Quantization] = FLOAT16


class TfliteDynamicRunner(TfliteRunner):
    BACKEND: ClassVar[str] = "tflite-dynamic"
    QUANTIZATION: ClassVar[Quantization] = DYNAMIC


class TfliteInt8Runner(TfliteRunner):
    BACKEND: ClassVar[str] = "tflite-int8"
    QUANTIZATION: ClassVar[Quantization] = INT8
