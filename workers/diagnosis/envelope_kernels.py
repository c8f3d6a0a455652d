"""The rounding envelope of a layer with a linear part and no activation or a ReLU (most
layers of most models), compiled (numba): one pass for the activation and the output's
scale, one for the envelope. In numpy the same arithmetic took about twenty passes over
the layer's output, each with its temporary: 2.7 ms of a cifar_cnn convolution's 4.9 at
batch 8, about a quarter of a diagnosis without a bug.

Every value is what workers/diagnosis/envelope.py computes with numpy, to the last bit:
the same operations in the same order on each element (no fused multiply-adds), NaN
handled as np.maximum and np.nan_to_num handle it. The compiled code is cached on disk
as the comparison's kernels are (workers/engine/metric_kernels.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from workers.engine.metric_kernels import INF_BITS


@njit(cache=True, nogil=True)
def _relu(value: float) -> float:
    """np.maximum(value, 0.0): the value where it is above zero or NaN, else +0.0 (numpy
    gives +0.0 for -0.0 too)."""
    return value if value > 0.0 or np.isnan(value) else 0.0


@njit(cache=True, nogil=True)
def activated(z: np.ndarray, relu: bool, y: np.ndarray) -> float:
    """y = relu(z) (z itself for a linear layer, written to y all the same); returns the
    largest finite magnitude among y's values (0 where there is none).

    The largest is taken over the magnitudes' bits, which order as their values do, the
    non-finite ones counted as 0: a float maximum behind a finiteness test kept the loop
    scalar (262,144 values, a cifar_cnn convolution at batch 8: 0.29-0.31 -> 0.15-0.17 ms)."""
    largest = np.int64(0)
    for i in range(z.size):
        value = _relu(z[i]) if relu else z[i]
        y[i] = value
        bits = np.float64(abs(value)).view(np.int64)
        largest = max(largest, bits if bits < INF_BITS else np.int64(0))
    return np.int64(largest).view(np.float64)


@njit(cache=True, nogil=True)
def envelope(
    z: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    relu: bool,
    c_out: float,
    offset: float,
    factor_unit: float,
    tau: np.ndarray,
) -> None:
    """tau = (|y| * c_out + offset) * factor_unit plus the bound t on z's error carried
    through the activation: t itself for a linear layer; for a ReLU the larger of
    |relu(z + t) - y| and |relu(z - t) - y|, 0 where either is NaN (np.maximum
    propagates NaN, np.nan_to_num zeroes it)."""
    for i in range(z.size):
        result = abs(y[i]) * c_out
        result = result + offset
        result = result * factor_unit
        bound = np.float64(t[i])
        if relu:
            above = abs(_relu(z[i] + bound) - y[i])
            below = abs(_relu(z[i] - bound) - y[i])
            if np.isnan(above) or np.isnan(below):
                bound = 0.0
            else:
                bound = above if above >= below else below
        tau[i] = result + bound
