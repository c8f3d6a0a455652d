"""Every layer and keras.ops operation (`ops.<Class>`) the numpy port computes: the one
table its runner, the TF.js export's shared helpers and the tests read."""

from __future__ import annotations

from workers.backends.numpy.attention import ATTENTION_LAYERS
from workers.backends.numpy.layers import FEEDFORWARD_LAYERS, LayerFunction
from workers.backends.numpy.operations import OPERATIONS
from workers.backends.numpy.recurrent import RECURRENT_LAYERS
from workers.backends.numpy.wrappers import time_distributed

LAYERS: dict[str, LayerFunction] = {
    **FEEDFORWARD_LAYERS,
    **RECURRENT_LAYERS,
    **ATTENTION_LAYERS,
    **OPERATIONS,
}
LAYERS["TimeDistributed"] = time_distributed(LAYERS)
SUPPORTED_LAYERS: frozenset[str] = frozenset({*LAYERS, "InputLayer"})
