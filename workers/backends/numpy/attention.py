"""Attention layers of the numpy port: Attention (dot-product), AdditiveAttention and
MultiHeadAttention, in inference mode (no dropout).

A node's inbound tensors are the layer's call arguments in order: [query, value] or
[query, value, key], the key defaulting to the value. Keras applies the inputs' masks,
`attention_mask` and `use_causal_mask` when it runs these layers; the port applies
none of them, so a call with any (the graph records which inputs carry a mask, and
the call's keywords) is refused rather than computed without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from workers.backends.numpy.activations import sigmoid, softmax
from workers.backends.numpy.layers import Config, LayerConfigUnsupported, LayerFunction, Weights


def _check_call(config: Config) -> None:
    call = config.get("call", {})
    if call.get("masked"):
        raise LayerConfigUnsupported("inputs carrying a Keras mask (the port applies none)")
    for key, value in call.get("kwargs", {}).items():
        if key != "training" and value not in (None, False):
            raise LayerConfigUnsupported(f"called with {key}")


def _query_value_key(inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(inputs) not in (2, 3):
        raise LayerConfigUnsupported(f"called with {len(inputs)} tensors")
    query, value = inputs[0], inputs[1]
    return query, value, inputs[2] if len(inputs) == 3 else value


def _pairwise_sum(query: np.ndarray, key: np.ndarray) -> np.ndarray:
    """(batch, Tq, Tv, dim): every query step plus every key step."""
    return query[..., :, np.newaxis, :] + key[..., np.newaxis, :, :]


def attention(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
    """Scores q.k (times the learned `scale`), or with score_mode 'concat'
    concat_score_weight * sum(tanh(scale * (q + k))); softmax over the keys."""
    _check_call(config)
    query, value, key = _query_value_key(inputs)
    scale = weights["scale"] if config.get("use_scale") else None
    mode = config.get("score_mode", "dot")
    if mode == "dot":
        scores = query @ np.swapaxes(key, -1, -2)
        if scale is not None:
            scores = scores * scale
    elif mode == "concat":
        pairs = _pairwise_sum(query, key)
        if scale is not None:
            pairs = scale * pairs
        scores = weights["concat_score_weight"] * np.sum(np.tanh(pairs), axis=-1)
    else:
        raise LayerConfigUnsupported(f"score_mode {mode!r}")
    return softmax(scores) @ value


def additive_attention(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
    """Scores sum(scale * tanh(q + k)), `scale` one learned weight per feature."""
    _check_call(config)
    query, value, key = _query_value_key(inputs)
    terms = np.tanh(_pairwise_sum(query, key))
    if config.get("use_scale", True):
        terms = weights["scale"] * terms
    return softmax(np.sum(terms, axis=-1)) @ value


def _einsum_dense(x: np.ndarray, weights: Weights, name: str, contracted: int) -> np.ndarray:
    """Sublayer `name` of MultiHeadAttention (an EinsumDense): the last `contracted` axes
    of x against the kernel's first ones, plus the bias where use_bias."""
    key = f"{name}/kernel"
    if key not in weights:
        raise LayerConfigUnsupported(
            f"no weight {key!r}: its sublayers' weights share the names 'kernel' and 'bias', "
            "so they must be keyed by their path in the layer"
        )
    out = np.tensordot(x, weights[key], axes=contracted)
    bias = weights.get(f"{name}/bias")
    return out if bias is None else out + bias


def _attention_axes(config: Config, rank: int) -> tuple[int, ...]:
    """The attended axes of the projected (batch, ..., heads, size) tensors, as Keras
    normalises them; by default every axis between the batch and the heads."""
    axes = config.get("attention_axes")
    if axes is None:
        return tuple(range(1, rank - 2))
    axes = (axes,) if isinstance(axes, int) else axes
    return tuple(axis if axis >= 0 else rank - 1 + axis for axis in axes)


def _scaled_dot_product(
    query: np.ndarray, key: np.ndarray, value: np.ndarray, axes: Sequence[int]
) -> np.ndarray:
    """Softmax(q.k) v over the attended axes jointly (flattened into one), the other axes
    between batch and heads acting as batch axes, as Keras's einsum equations do."""
    rank = query.ndim
    batch_axes = [0, *(a for a in range(1, rank - 2) if a not in axes), rank - 2]
    order = [*batch_axes, *axes, rank - 1]
    moved_query, moved_key, moved_value = (np.transpose(t, order) for t in (query, key, value))
    lead = len(batch_axes)

    def flat(t: np.ndarray) -> np.ndarray:
        return t.reshape(*t.shape[:lead], -1, t.shape[-1])

    scores = flat(moved_query) @ np.swapaxes(flat(moved_key), -1, -2)
    out = softmax(scores) @ flat(moved_value)
    out = out.reshape(*moved_query.shape[:-1], out.shape[-1])
    return np.transpose(out, np.argsort(order))


def multi_head_attention(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
    """Project query, key and value per head, attend (query scaled by 1/sqrt(key_dim)),
    gate with `use_gate`, project back. Weights keyed by sublayer: 'query/kernel', ..."""
    if config.get("sliding_window") is not None:
        raise LayerConfigUnsupported("sliding_window")
    _check_call(config)
    query, value, key = _query_value_key(inputs)
    projected_query = _einsum_dense(query, weights, "query", 1)
    scale = query.dtype.type(1.0 / math.sqrt(float(config["key_dim"])))
    out = _scaled_dot_product(
        projected_query * scale,
        _einsum_dense(key, weights, "key", 1),
        _einsum_dense(value, weights, "value", 1),
        _attention_axes(config, projected_query.ndim),
    )
    if config.get("use_gate"):
        out = out * sigmoid(_einsum_dense(query, weights, "gate", 1))
    return _einsum_dense(out, weights, "attention_output", 2)


ATTENTION_LAYERS: dict[str, LayerFunction] = {
    "Attention": attention,
    "AdditiveAttention": additive_attention,
    "MultiHeadAttention": multi_head_attention,
}
