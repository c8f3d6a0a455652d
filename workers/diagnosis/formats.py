"""Number formats a backend may compute in: rounding float64 values to float16,
bfloat16, TF32 and int8 grids, as the precision hypotheses need them.

Each rounding is to nearest, ties to even, as the hardware formats do; the values
stay float64 so the layer can be recomputed exactly from them.
"""

from __future__ import annotations

import numpy as np

# Unit roundoff (half an ulp at 1) of each format a candidate may store or compute in.
UNIT_ROUNDOFF = {
    "float16": 2.0**-11,
    "tf32": 2.0**-11,
    "bfloat16": 2.0**-8,
    "float32": 2.0**-24,
}


def to_float16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(np.float16).astype(np.float64)


def _keep_mantissa_bits(x: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to `bits` explicit mantissa bits (of 23), keeping the
    exponent: bfloat16 keeps 7, TF32 keeps 10."""
    f32 = np.asarray(x, dtype=np.float32)
    raw = f32.view(np.uint32).astype(np.uint64)
    drop = 23 - bits
    half = np.uint64(1 << (drop - 1))
    odd = (raw >> np.uint64(drop)) & np.uint64(1)
    rounded = ((raw + half - np.uint64(1) + odd) >> np.uint64(drop)) << np.uint64(drop)
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(f32), out, f32).astype(np.float64)


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    return _keep_mantissa_bits(x, 7)


def to_tf32(x: np.ndarray) -> np.ndarray:
    return _keep_mantissa_bits(x, 10)


def int8_channel_steps(kernel: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """Each output channel's symmetric int8 step (TFLite's per-channel scheme: max|w|/127),
    broadcast to the kernel's shape. A depthwise kernel (kh, kw, channels, multiplier) has
    one per (channel, multiplier); any other kernel one per entry of its last axis."""
    spatial = kernel.ndim - 2 if depthwise else kernel.ndim - 1
    steps = np.max(np.abs(kernel), axis=tuple(range(spatial)), keepdims=True) / 127.0
    return np.broadcast_to(np.where(steps == 0.0, 1.0, steps), kernel.shape)


def int8_weights(kernel: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """The kernel on its per-channel symmetric int8 grid."""
    steps = int8_channel_steps(kernel, depthwise)
    return np.clip(np.round(kernel / steps), -127, 127) * steps


def int8_per_sample(x: np.ndarray) -> np.ndarray:
    """Each sample rounded to an asymmetric int8 grid over its own range (zero included):
    what TFLite's dynamic-range kernels do to a float input on the fly."""
    axes = tuple(range(1, x.ndim))
    low = np.minimum(np.min(x, axis=axes, keepdims=True), 0.0)
    high = np.maximum(np.max(x, axis=axes, keepdims=True), 0.0)
    scale = (high - low) / 255.0
    scale = np.where(scale == 0.0, 1.0, scale)
    zero_point = np.round(-128.0 - low / scale)
    return (np.clip(np.round(x / scale) + zero_point, -128, 127) - zero_point) * scale


# Fewer distinct values are no evidence of a grid: a saturated sigmoid has two.
MIN_GRID_LEVELS = 16


def quantization_grid(values: np.ndarray) -> tuple[float, float] | None:
    """The step and offset of the 8-bit grid a tensor's values sit on, read from the
    values themselves (a quantized backend's outputs are dequantized grid points: the
    smallest gap between distinct values is the step), or None when they sit on no grid
    of at most 256 levels. The step is refined to the span over the steps it holds: the
    smallest gap between float32-stored grid points is off by up to an ulp, which 255
    steps would multiply."""
    finite = np.unique(values[np.isfinite(values)])
    if finite.size < MIN_GRID_LEVELS:
        return None
    low = float(finite[0])
    span = float(finite[-1]) - low
    steps = round(span / float(np.min(np.diff(finite))))
    if steps > 255:
        return None
    step = span / steps
    positions = (finite - low) / step
    if float(np.max(np.abs(positions - np.round(positions)))) > 0.05:
        return None
    return step, low


def on_grid(x: np.ndarray, step: float, low: float) -> np.ndarray:
    """`x` rounded to the grid's nearest point."""
    return low + np.round((x - low) / step) * step
