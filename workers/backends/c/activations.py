"""Keras's built-in activations as C99 statements on one float32 value, `v`.

Written from the formulas (as the numpy port's are), the way a person porting by hand
would write them with <math.h>'s float functions; softmax, which needs a whole axis,
is the layer code's (`SOFTMAX`). Every snippet is our own text: a model only picks one
by name.
"""

from __future__ import annotations

SELU_ALPHA = "1.67326324235437728f"
SELU_SCALE = "1.05070098735548049f"
SOFTPLUS = "(v > 0.0f ? v : 0.0f) + log1pf(expf(-fabsf(v)))"
# Clamps written as comparisons, so a NaN stays NaN (fminf/fmaxf would make it a bound).
HARD_SIGMOID = "(v / 6.0f + 0.5f < 0.0f ? 0.0f : (v / 6.0f + 0.5f > 1.0f ? 1.0f : v / 6.0f + 0.5f))"

# Each maps `v` to the activated value.
ELEMENTWISE: dict[str, str] = {
    "linear": "v",
    "relu": "v < 0.0f ? 0.0f : v",
    "relu6": "v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v)",
    "leaky_relu": "v >= 0.0f ? v : 0.2f * v",
    "elu": "v > 0.0f ? v : expm1f(v)",
    "selu": f"{SELU_SCALE} * (v > 0.0f ? v : {SELU_ALPHA} * expm1f(v))",
    "gelu": "0.5f * v * (1.0f + erff(v / 1.41421356237309505f))",
    "sigmoid": "1.0f / (1.0f + expf(-v))",
    "hard_sigmoid": HARD_SIGMOID,
    "hard_silu": f"v * {HARD_SIGMOID}",
    "hard_swish": f"v * {HARD_SIGMOID}",
    "tanh": "tanhf(v)",
    "softplus": SOFTPLUS,
    "softsign": "v / (1.0f + fabsf(v))",
    "silu": "v / (1.0f + expf(-v))",
    "swish": "v / (1.0f + expf(-v))",
    "mish": f"v * tanhf({SOFTPLUS})",
    "exponential": "expf(v)",
}
SOFTMAX = "softmax"
C_ACTIVATIONS = frozenset({*ELEMENTWISE, SOFTMAX})
