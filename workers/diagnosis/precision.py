"""What a backend's nominal precision allows one layer: the judge of reduced-precision
backends, where a correct model drifts far past float32 rounding and a bug must still
show.

Storing a number in a narrower format adds an error that behaves as noise, independent
across the K products of a dot product: rounding to a float format with unit roundoff
u moves a value v by up to u|v| (variance u^2 v^2 / 3); rounding to an int8 step s moves
it by up to s/2 (variance s^2/12). So a matmul or convolution output may move by

    C_NOISE * sqrt( sum_k x_k^2 var(w_k)  +  sum_k w_k^2 var(x_k) )

carried through the activation. An int8 weight's step is its output channel's
max|w|/127 (TFLite's per-channel scheme); an input's is (max x - min x)/255. An input
already stored in the format (a float16 tensor, a value on an 8-bit grid, as the layers
of a full-integer model pass them) adds no noise. On top: the rounding of the output
into the format (u|y|, or one step of the output's 8-bit grid: requantization, a
lookup-table activation) and float32's own envelope. Layers without weights to quantize
(and batch normalisation, a scale and shift per channel) get, instead of the noise
term, the rounding envelope at the format's unit roundoff (2^-8 for int8) plus what
shifting their inputs by half a step does to them. Other weighted layers of an int8
backend (transposed and separable convolutions, recurrent layers, embeddings) are not
modelled: they keep the rel_l2 rule. C_NOISE = 4: four standard deviations.
"""

from __future__ import annotations

import numpy as np

from workers.backends.registry import Precision
from workers.diagnosis.envelope import (
    activation_of,
    apply_layer,
    pre_activation,
    through_activation,
)
from workers.diagnosis.formats import (
    UNIT_ROUNDOFF,
    int8_channel_steps,
    quantization_grid,
    to_bfloat16,
    to_float16,
    to_tf32,
)
from workers.diagnosis.hypotheses import Case

C_NOISE = 4.0
INT8_UNIT = 2.0**-8
# Layers whose kernel a narrow format stores (TFLite quantizes these per output channel).
KERNEL_LAYERS = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D"})
# Weighted layers whose int8 form the 8-bit envelope covers: a scale and shift per
# channel, rounded like any value.
INT8_SCALED = frozenset({"BatchNormalization", "Rescaling"})
# Random sign patterns tried when shifting a layer's inputs by half a step.
SIGN_DRAWS = 2
# The precisions judged by their own envelope; float32 and float64 backends keep
# float32 rounding and the fixed thresholds.
REDUCED = frozenset({"float16", "bfloat16", "tf32", "int8"})
ROUND_TO = {"float16": to_float16, "bfloat16": to_bfloat16, "tf32": to_tf32}


def _stored(x: np.ndarray, precision: Precision) -> bool:
    """Whether a tensor already holds values of the format: rounding it again adds nothing."""
    if precision == "int8":
        return quantization_grid(x) is not None
    with np.errstate(invalid="ignore"):
        return bool(np.all((ROUND_TO[precision](x) == x) | ~np.isfinite(x)))


def _int8_step(x: np.ndarray) -> float:
    """The step of an asymmetric 8-bit grid over a float tensor's range."""
    finite = x[np.isfinite(x)]
    return float(finite.max() - finite.min()) / 255.0 if finite.size else 0.0


def _input_variance(x: np.ndarray, precision: Precision) -> np.ndarray:
    if _stored(x, precision):
        return np.zeros_like(x)
    if precision != "int8":
        return np.square(x) * UNIT_ROUNDOFF[precision] ** 2 / 3.0
    return np.full(x.shape, _int8_step(x) ** 2 / 12.0)


def _storage_noise(case: Case, precision: Precision) -> np.ndarray:
    """The dot products' spread from rounding their weights and inputs (module docstring)."""
    layer = case.layer
    kernel = np.asarray(layer.weights["kernel"], dtype=np.float64)
    if precision == "int8":
        depthwise = layer.class_name == "DepthwiseConv2D"
        kernel_variance = np.square(int8_channel_steps(kernel, depthwise)) / 12.0
    else:
        kernel_variance = np.square(kernel) * UNIT_ROUNDOFF[precision] ** 2 / 3.0
    no_bias = {"bias": np.zeros_like(layer.weights["bias"])} if "bias" in layer.weights else {}
    x = case.inputs[0]
    variance = pre_activation(
        layer, [np.square(x)], weights={**layer.weights, **no_bias, "kernel": kernel_variance}
    ) + pre_activation(
        layer,
        [_input_variance(x, precision)],
        weights={**layer.weights, **no_bias, "kernel": np.square(kernel)},
    )
    z = pre_activation(layer, case.inputs)
    spread = C_NOISE * np.sqrt(np.abs(variance))
    return through_activation(activation_of(layer), z, case.exact, spread)


def _input_rounding(case: Case, precision: Precision) -> np.ndarray:
    """What rounding the inputs into the format can do to a layer without weights to
    quantize (an activation, a pooling, an add): the largest move of the layer over its
    inputs shifted half a step (int8; u|x| for a float format) each way, and with random
    signs (a uniform shift is invisible to a softmax or a subtraction, rounding is not).
    Inputs already in the format move nothing."""
    shifts = []
    for x in case.inputs:
        if x.dtype.kind != "f" or _stored(x, precision):
            shifts.append(np.zeros_like(x))
        elif precision == "int8":
            shifts.append(np.full(x.shape, _int8_step(x) / 2.0))
        else:
            shifts.append(np.abs(x) * UNIT_ROUNDOFF[precision])
    moved = np.zeros_like(case.exact)
    if not any(shift.any() for shift in shifts):
        return moved
    rng = np.random.default_rng(0)
    for _ in range(SIGN_DRAWS):
        signs = [rng.choice([-1.0, 1.0], size=x.shape) for x in case.inputs]
        for pattern in (signs, [np.ones_like(x) for x in case.inputs]):
            for direction in (1.0, -1.0):
                shifted = [
                    x + direction * sign * shift
                    for x, sign, shift in zip(case.inputs, pattern, shifts, strict=True)
                ]
                moved = np.maximum(moved, np.abs(apply_layer(case.layer, shifted) - case.exact))
    return moved


def precision_envelope(case: Case, precision: Precision) -> np.ndarray | None:
    """The elementwise error a layer may show at the backend's nominal precision; None
    for an int8 layer with weights this does not model (a transposed or separable
    convolution, a recurrent layer, an embedding table): it keeps the rel_l2 rule."""
    unit = INT8_UNIT if precision == "int8" else UNIT_ROUNDOFF[precision]
    layer = case.layer
    if layer.class_name in KERNEL_LAYERS and "kernel" in layer.weights and len(case.inputs) == 1:
        noise = _storage_noise(case, precision)
    elif precision == "int8" and layer.weights and layer.class_name not in INT8_SCALED:
        return None
    else:
        noise = case.envelope_at(unit) + _input_rounding(case, precision)
    if precision == "int8":
        grid = case.grid or quantization_grid(case.candidate)
        output = grid[0] if grid is not None else 0.0
    else:
        output = unit * np.abs(case.exact)
    return case.tolerance + noise + output
