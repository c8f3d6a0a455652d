"""Recurrent layers of the numpy port: SimpleRNN, LSTM, GRU (both `reset_after`) and
Bidirectional, one time step at a time as Keras 3's cells define them.

Only the layer's outputs are compared (the last step's, or every step's with
`return_sequences`); the per-step state is internal. Gate order is Keras's: LSTM
[i, f, c, o], GRU [z, r, h]. `go_backwards` walks the sequence from its end and
returns the steps in that order, as Keras does.

A layer given a Keras mask, (batch, time) booleans as a Masking layer or an Embedding
with `mask_zero` makes it, skips the masked steps as Keras's TensorFlow `rnn` loop does:
the state stays as it was and the output repeats the previous step's, or is zeros with
`zero_output_for_mask`. The mask reaches the layer as a second inbound tensor (see
`with_mask`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from workers.backends.numpy.activations import get_activation
from workers.backends.numpy.layers import (
    Config,
    LayerConfigUnsupported,
    LayerFunction,
    MaskedFunction,
    Weights,
    with_mask,
)

State = list[np.ndarray]
Step = Callable[[np.ndarray, State], tuple[np.ndarray, State]]


def _check(config: Config) -> None:
    for option in ("return_state", "stateful"):
        if config.get(option):
            raise LayerConfigUnsupported(f"{option}=True")


def _bias(weights: Weights, config: Config, width: int, dtype: Any) -> np.ndarray:
    if config.get("use_bias", True):
        return weights["bias"]
    return np.zeros(width, dtype=dtype)


def _unroll(
    x: np.ndarray, step: Step, state: State, config: Config, mask: np.ndarray | None
) -> np.ndarray:
    steps = range(x.shape[1] - 1, -1, -1) if config.get("go_backwards") else range(x.shape[1])
    outputs: list[np.ndarray] = []
    for t in steps:
        h, new_state = step(x[:, t], state)
        if mask is not None:
            keep = mask[:, t, np.newaxis]
            zeros = config.get("zero_output_for_mask") or not outputs
            h = np.where(keep, h, np.zeros_like(h) if zeros else outputs[-1])
            new_state = [
                np.where(keep, new, old) for new, old in zip(new_state, state, strict=True)
            ]
        state = new_state
        outputs.append(h)
    return np.stack(outputs, axis=1) if config.get("return_sequences") else outputs[-1]


def simple_rnn(
    x: np.ndarray, config: Config, weights: Weights, mask: np.ndarray | None
) -> np.ndarray:
    _check(config)
    units = int(config["units"])
    activation = get_activation(config.get("activation", "tanh"))
    kernel, recurrent = weights["kernel"], weights["recurrent_kernel"]
    bias = _bias(weights, config, units, x.dtype)

    def step(x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        h = activation(x_t @ kernel + bias + state[0] @ recurrent)
        return h, [h]

    return _unroll(x, step, [np.zeros((x.shape[0], units), x.dtype)], config, mask)


def lstm(x: np.ndarray, config: Config, weights: Weights, mask: np.ndarray | None) -> np.ndarray:
    _check(config)
    units = int(config["units"])
    activation = get_activation(config.get("activation", "tanh"))
    gate = get_activation(config.get("recurrent_activation", "sigmoid"))
    kernel, recurrent = weights["kernel"], weights["recurrent_kernel"]
    bias = _bias(weights, config, 4 * units, x.dtype)

    def step(x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        h_prev, c_prev = state
        z = x_t @ kernel + bias + h_prev @ recurrent
        i, f, c_in, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        c = gate(f) * c_prev + gate(i) * activation(c_in)
        h = gate(o) * activation(c)
        return h, [h, c]

    zeros = np.zeros((x.shape[0], units), x.dtype)
    return _unroll(x, step, [zeros, zeros], config, mask)


def gru(x: np.ndarray, config: Config, weights: Weights, mask: np.ndarray | None) -> np.ndarray:
    """`reset_after` (Keras's default) applies the reset gate after the recurrent matrix
    product and has a second, recurrent bias; without it, before."""
    _check(config)
    units = int(config["units"])
    activation = get_activation(config.get("activation", "tanh"))
    gate = get_activation(config.get("recurrent_activation", "sigmoid"))
    kernel, recurrent = weights["kernel"], weights["recurrent_kernel"]
    reset_after = config.get("reset_after", True)
    if reset_after:
        bias = weights["bias"] if config.get("use_bias", True) else np.zeros((2, 3 * units))
        input_bias, recurrent_bias = bias[0].astype(x.dtype), bias[1].astype(x.dtype)
    else:
        input_bias = _bias(weights, config, 3 * units, x.dtype)
        recurrent_bias = np.zeros(3 * units, x.dtype)

    def step(x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        h_prev = state[0]
        x_z, x_r, x_h = np.split(x_t @ kernel + input_bias, 3, axis=-1)
        inner = h_prev @ recurrent[:, : 2 * units] + recurrent_bias[: 2 * units]
        z = gate(x_z + inner[:, :units])
        r = gate(x_r + inner[:, units:])
        if reset_after:
            recurrent_h = r * (h_prev @ recurrent[:, 2 * units :] + recurrent_bias[2 * units :])
        else:
            recurrent_h = (r * h_prev) @ recurrent[:, 2 * units :]
        h = z * h_prev + (1 - z) * activation(x_h + recurrent_h)
        return h, [h]

    return _unroll(x, step, [np.zeros((x.shape[0], units), x.dtype)], config, mask)


RECURRENT: dict[str, MaskedFunction] = {
    "SimpleRNN": simple_rnn,
    "LSTM": lstm,
    "GRU": gru,
}
MERGES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "concat": lambda forward, backward: np.concatenate([forward, backward], axis=-1),
    "sum": np.add,
    "mul": np.multiply,
    "ave": lambda forward, backward: (forward + backward) / forward.dtype.type(2),
}


def bidirectional(
    x: np.ndarray, config: Config, weights: Weights, mask: np.ndarray | None
) -> np.ndarray:
    """The forward layer, the backward one (its steps put back in time order), merged.
    Their weights are keyed 'forward/<name>' and 'backward/<name>' (engine/graph.py).
    Both see the same mask; Keras sets their `zero_output_for_mask` to their
    `return_sequences`, whatever their configs say."""
    merge = config.get("merge_mode", "concat")
    if merge not in MERGES:
        raise LayerConfigUnsupported(f"merge_mode {merge!r}")
    sides = []
    for side, key in (("forward", "layer"), ("backward", "backward_layer")):
        inner = config.get(key) or config["layer"]
        run = RECURRENT.get(inner["class_name"])
        if run is None:
            raise LayerConfigUnsupported(f"wrapped layer {inner['class_name']}")
        inner_config = dict(inner["config"])
        if side == "backward" and key not in config:
            inner_config["go_backwards"] = not inner_config.get("go_backwards", False)
        inner_config["zero_output_for_mask"] = inner_config.get("return_sequences", False)
        prefix = f"{side}/"
        own = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
        output = run(x, inner_config, own, mask)
        if side == "backward" and inner_config.get("return_sequences"):
            output = np.flip(output, axis=1)
        sides.append(output)
    return MERGES[merge](*sides)


RECURRENT_LAYERS: dict[str, LayerFunction] = {
    name: with_mask(run) for name, run in {**RECURRENT, "Bidirectional": bidirectional}.items()
}
