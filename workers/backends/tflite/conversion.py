"""Converting a Keras model to TFLite flatbuffers in the four forms people deploy, with
every layer's output an output of the converted model.

Keras 3 models reach the converter through a SavedModel written by Keras's own
`ExportArchive` (the converter's `from_keras_model` predates Keras 3, and a frozen
concrete function loses the signature the interpreter runs). The signature's inputs
are `i0, i1, ...` and its outputs `o0, o1, ...`: layer names never reach the
converter. Making a layer's output an output can stop the converter from fusing it
into the next op (a batch normalisation into a convolution, an activation into a
matmul), so the runner also converts the model as it is and records whether the final
outputs come out the same.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.backends.base import BackendFailed, BackendUnsupported

# At most this many samples calibrate a full-integer model: beyond a few hundred the
# observed ranges no longer move, and each one is a float inference.
CALIBRATION_SAMPLES = 256
# How the converter words a refusal (an op it has no kernel or no quantization for).
REFUSED = re.compile(r"not (yet )?supported|unsupported", re.I)


@dataclass(frozen=True)
class Quantization:
    """One of the converter's settings, as TFLite's documentation names them."""

    name: str
    weights: str
    activations: str
    calibrated: bool = False  # full integer: activation ranges from sample inputs


FLOAT32 = Quantization("float32", "float32", "float32")
FLOAT16 = Quantization("float16", "float16 (dequantized to float32 at load)", "float32")
DYNAMIC = Quantization(
    "dynamic-range",
    "int8, per output channel (tensors of 1024 elements or more)",
    "float32; quantized to int8 per sample on the fly inside matmuls and convolutions",
)
INT8 = Quantization(
    "int8",
    "int8, per output channel",
    "int8, scales calibrated on the run's inputs; float32 at the model's edges",
    calibrated=True,
)


def _configure(converter: Any, tf: Any, quantization: Quantization) -> None:
    """The converter flags of each form, as TFLite's post-training quantization guide
    sets them (int8: builtin int8 ops only, so no layer silently stays float)."""
    if quantization is FLOAT32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization is FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if quantization is INT8:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _converter_message(error: Exception) -> str:
    """The converter's reason without its MLIR location dump and stack: the lines that
    say which op or setting it refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "error" in line.lower() or REFUSED.search(line)]
    return " ".join(useful or lines[:3])[:600]


def convert(
    keras: Any,
    tf: Any,
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    quantization: Quantization,
    calibration: Sequence[Sequence[np.ndarray]] | None = None,
) -> bytes:
    """The flatbuffer of a Keras graph from `inputs` (symbolic tensors) to `outputs`;
    `calibration` (per sample, one array per input) for the full-integer form."""
    graph = keras.Model(list(inputs), {f"o{i}": tensor for i, tensor in enumerate(outputs)})
    specs = [
        tf.TensorSpec(shape=(None, *tensor.shape[1:]), dtype=tensor.dtype, name=f"i{j}")
        for j, tensor in enumerate(inputs)
    ]

    def serve(*args: Any) -> Any:
        return graph(list(args), training=False)

    archive = keras.export.ExportArchive()
    archive.track(graph)
    archive.add_endpoint("serve", tf.function(serve, input_signature=specs))
    with tempfile.TemporaryDirectory(prefix="driftbench-tflite-") as directory:
        archive.write_out(directory, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=["serve"])
        _configure(converter, tf, quantization)
        if quantization.calibrated:
            if not calibration:
                raise ValueError("full-integer quantization needs calibration samples")
            converter.representative_dataset = lambda: _samples(calibration)
        try:
            flatbuffer: bytes = converter.convert()
        except Exception as error:
            message = _converter_message(error)
            if REFUSED.search(message):
                raise BackendUnsupported(
                    f"unsupported: the TFLite converter ({quantization.name}) refused the "
                    f"model: {message}"
                ) from error
            raise BackendFailed(
                f"the TFLite converter ({quantization.name}) failed: {message}"
            ) from error
    return flatbuffer


def _samples(calibration: Sequence[Sequence[np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """By the signature's input names: as a list, the calibrator would take i10 for i2."""
    for sample in calibration:
        yield {f"i{j}": np.asarray(x) for j, x in enumerate(sample)}


def calibration_count(feeds: Sequence[np.ndarray]) -> int:
    """How many samples of a feed calibrate: all of them up to CALIBRATION_SAMPLES."""
    return min(len(feeds[0]), CALIBRATION_SAMPLES) if feeds else 0


def calibration_samples(feeds: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """The samples of one feed (one array per input, samples along the first axis) as
    single-sample feeds, at most CALIBRATION_SAMPLES of them."""
    return [[x[i : i + 1] for x in feeds] for i in range(calibration_count(feeds))]
