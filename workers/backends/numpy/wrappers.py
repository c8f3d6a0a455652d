"""TimeDistributed: the wrapped layer applied to every time step.

Keras calls the wrapped layer once per step; each step is independent, so the port
applies the wrapped layer's function once to all steps folded into the batch axis. The
wrapped layer may be any the port computes, looked up in the port's table when the layer
runs (the table holds this wrapper too), and its weights are the wrapped layer's own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from workers.backends.numpy.activations import UnknownActivation
from workers.backends.numpy.layers import (
    Config,
    LayerConfigUnsupported,
    LayerFunction,
    Weights,
    unary,
)


def time_distributed(table: Mapping[str, LayerFunction]) -> LayerFunction:
    """Refuses a Keras mask (a second inbound tensor): Keras would hand each step's slice
    to a wrapped layer that takes one."""

    def run(x: np.ndarray, config: Config, weights: Weights) -> np.ndarray:
        inner = config["layer"]
        function = table.get(inner["class_name"])
        if function is None:
            raise LayerConfigUnsupported(f"wrapped layer {inner['class_name']}")
        batch, steps = x.shape[:2]
        try:
            out = function([x.reshape(batch * steps, *x.shape[2:])], inner["config"], weights)
        except UnknownActivation as error:
            raise LayerConfigUnsupported(
                f"wrapped layer {inner['class_name']} activation {error}"
            ) from error
        return out.reshape(batch, steps, *out.shape[1:])

    return unary(run)
