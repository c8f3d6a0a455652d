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
get, instead of the noise term, the rounding envelope at the format's unit roundoff
(2^-8 for int8) plus what shifting their inputs by half a step either way does to them.
C_NOISE = 4: four standard deviations.
"""

from __future__ import annotations

import numpy as np

from workers.diagnosis.envelope import (
    activation_of,
    apply_layer,
    pre_activation,
    through_activation,
)
from workers.diagnosis.formats import (
    UNIT_ROUNDOFF,
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
# The precisions judged by their own envelope; float32 and float64 backends keep
# float32 rounding and the fixed thresholds.
REDUCED = frozenset({"float16", "bfloat16", "tf32", "int8"})
ROUND_TO = {"float16": to_float16, "bfloat16": to_bfloat16, "tf32": to_tf32}


def _channel_steps(layer_class: str, kernel: np.ndarray) -> np.ndarray:
    """Each output channel's int8 weight step, broadcast to the kernel's shape: a
    depthwise kernel (kh, kw, channels, multiplier) has one per (channel, multiplier)."""
    spatial = kernel.ndim - 2 if layer_class == "DepthwiseConv2D" else kernel.ndim - 1
    steps = np.max(np.abs(kernel), axis=tuple(range(spatial)), keepdims=True) / 127.0
    return np.broadcast_to(steps, kernel.shape)


def _stored(x: np.ndarray, precision: str) -> bool:
    if precision == "int8":
        return quantization_grid(x) is not None
    with np.errstate(invalid="ignore"):
        return bool(np.all((ROUND_TO[precision](x) == x) | ~np.isfinite(x)))


def _input_variance(x: np.ndarray, precision: str) -> np.ndarray:
    if _stored(x, precision):
        return np.zeros_like(x)
    if precision != "int8":
        return np.square(x) * UNIT_ROUNDOFF[precision] ** 2 / 3.0
    finite = x[np.isfinite(x)]
    step = float(finite.max() - finite.min()) / 255.0 if finite.size else 0.0
    return np.full(x.shape, step * step / 12.0)


def _storage_noise(case: Case, precision: str) -> np.ndarray:
    layer = case.layer
    kernel = np.asarray(layer.weights["kernel"], dtype=np.float64)
    if precision == "int8":
        kernel_variance = np.square(_channel_steps(layer.class_name, kernel)) / 12.0
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


def _input_rounding(case: Case, precision: str) -> np.ndarray:
    """What rounding the inputs into the format can do to a layer without weights to
    quantize (an activation, a pooling, an add): the layer moved by every input shifted
    half a step (an int8 step; u|x| for a float format) either way. Inputs already in
    the format move nothing."""
    shifts = []
    for x in case.inputs:
        if x.dtype.kind != "f" or _stored(x, precision):
            shifts.append(np.zeros_like(x))
        elif precision == "int8":
            finite = x[np.isfinite(x)]
            shifts.append(
                np.full(x.shape, (finite.max() - finite.min()) / 510.0 if finite.size else 0.0)
            )
        else:
            shifts.append(np.abs(x) * UNIT_ROUNDOFF[precision])
    if not any(shift.any() for shift in shifts):
        return np.zeros_like(case.exact)
    up = apply_layer(case.layer, [x + d for x, d in zip(case.inputs, shifts, strict=True)])
    down = apply_layer(case.layer, [x - d for x, d in zip(case.inputs, shifts, strict=True)])
    return np.maximum(np.abs(up - case.exact), np.abs(down - case.exact))


def precision_envelope(case: Case, precision: str) -> np.ndarray:
    """The elementwise error a layer may show at the backend's nominal precision."""
    unit = INT8_UNIT if precision == "int8" else UNIT_ROUNDOFF[precision]
    layer = case.layer
    if layer.class_name in KERNEL_LAYERS and "kernel" in layer.weights and len(case.inputs) == 1:
        noise = _storage_noise(case, precision)
    else:
        noise = case.envelope_at(unit) + _input_rounding(case, precision)
    if precision == "int8":
        grid = case.grid or quantization_grid(case.candidate)
        output = grid[0] if grid is not None else 0.0
    else:
        output = unit * np.abs(case.exact)
    return case.tolerance + noise + output
