"""Keras masks. Keras's functional graph computes a mask with keras.ops nodes and passes it
to each layer that takes one as a second inbound tensor, the call's `mask` keyword; the
port reads which tensor is the mask from the node's call template (`config["call"]`, which
graph.py records for keras.ops nodes and not yet for layers). Checked here against Keras:
the Masking layer through the runner, and each mask-taking layer given the mask as the
runner would hand it (an ops node's output, in the port's float dtype)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from tests.workers.backends.numpy.test_layers import (
    WITHIN_ROUNDING,
    assert_within_rounding,
    layer_verdicts,
)
from workers.backends.execution import run_locally
from workers.backends.numpy.layers import LayerConfigUnsupported, masking, masking_mask
from workers.backends.numpy.port import LAYERS
from workers.backends.pool import RunnerPool
from workers.engine.graph import LayerSpec, graph_from_keras

MASK_VALUE = 0.1  # not a float32 number: the port must compare with the model's float32 constant
STEPS, FEATURES = 6, 3


def masked_sequences(batch: int = 4, seed: int = 0) -> np.ndarray:
    """Steps Masking(MASK_VALUE) masks: sample 0's first and fourth, sample 1's third and
    last, every step of sample 2; sample 0's second step only partly equals the value."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, STEPS, FEATURES)).astype(np.float32)
    x[0, [0, 3]] = MASK_VALUE
    x[0, 1, 0] = MASK_VALUE
    x[1, [2, STEPS - 1]] = MASK_VALUE
    x[2] = MASK_VALUE
    return x


def masked_model(keras: Any, make_layer: Any) -> Any:
    L = keras.layers
    return keras.Sequential([keras.Input((STEPS, FEATURES)), L.Masking(MASK_VALUE), make_layer(L)])


def test_masking_zeroes_the_steps_keras_masks(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    model = keras.Sequential(
        [keras.Input((STEPS, FEATURES)), keras.layers.Masking(MASK_VALUE), keras.layers.Dense(2)]
    )
    randomize_weights(model, seed=1)
    artifact = save_model(model)
    x = masked_sequences()
    inputs = {artifact.graph.inputs[0].name: x}
    assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs))
    kept = masking_mask(x.astype(np.float64), {"mask_value": MASK_VALUE})
    assert kept.sum() == kept.size - 2 - 2 - STEPS


# graph.py's `_call_template` of `layer(x)` when Keras adds the input's mask.
MASK_CALL = {"args": [{"input": 0}], "kwargs": {"training": False, "mask": {"input": 1}}}

MASKED_CASES = {
    "SimpleRNN-sequences": lambda L: L.SimpleRNN(4, return_sequences=True),
    "SimpleRNN-sequences-zero-output": lambda L: L.SimpleRNN(
        4, return_sequences=True, zero_output_for_mask=True
    ),
    "LSTM-last": lambda L: L.LSTM(4),
    "LSTM-sequences-backwards": lambda L: L.LSTM(3, return_sequences=True, go_backwards=True),
    "GRU-sequences-reset-before": lambda L: L.GRU(3, return_sequences=True, reset_after=False),
    "GRU-last-backwards": lambda L: L.GRU(4, go_backwards=True),
    "Bidirectional-LSTM-sequences": lambda L: L.Bidirectional(L.LSTM(3, return_sequences=True)),
    "Bidirectional-GRU-last-sum": lambda L: L.Bidirectional(L.GRU(3), merge_mode="sum"),
    "GlobalAveragePooling1D": lambda L: L.GlobalAveragePooling1D(),
    "GlobalAveragePooling1D-keepdims": lambda L: L.GlobalAveragePooling1D(keepdims=True),
    "BatchNormalization": lambda L: L.BatchNormalization(),
}


def run_masked(spec: LayerSpec, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The layer as the runner runs it: the mask as a float tensor, the call template."""
    weights = {key: value.astype(np.float64) for key, value in spec.weights.items()}
    config = {**spec.config, "call": MASK_CALL}
    return LAYERS[spec.class_name]([x, mask.astype(np.float64)], config, weights)


@pytest.mark.parametrize("case", sorted(MASKED_CASES))
def test_layers_take_the_mask_as_keras_does(case: str, keras: Any) -> None:
    """A recurrent layer keeps its state over a masked step and repeats its previous output
    (zeros with zero_output_for_mask, which Bidirectional turns on with return_sequences);
    the 1-D average counts kept steps only; batch normalization ignores the mask."""
    model = masked_model(keras, MASKED_CASES[case])
    randomize_weights(model, seed=sum(map(ord, case)))
    x = masked_sequences()
    raw = x.astype(np.float64)
    config = {"mask_value": MASK_VALUE}
    spec = graph_from_keras(model).compute_layers[-1]
    ours = run_masked(spec, masking(raw, config, {}), masking_mask(raw, config))
    np.testing.assert_allclose(ours, np.asarray(model(x)), atol=2e-6)


def test_embedding_mask_zero_masks_token_zero(keras: Any) -> None:
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((STEPS,), dtype="int32"),
            L.Embedding(5, 3, mask_zero=True, name="embedding"),
            L.LSTM(4, name="lstm"),
        ]
    )
    randomize_weights(model, seed=4)
    ids = np.random.default_rng(1).integers(0, 5, (4, STEPS)).astype(np.int32)
    ids[0, -1] = ids[1, 0] = 0
    graph = graph_from_keras(model)
    embedded = LAYERS["Embedding"]([ids], {}, graph.layer("embedding").weights)
    ours = run_masked(graph.layer("lstm"), embedded.astype(np.float64), ids != 0)
    np.testing.assert_allclose(ours, np.asarray(model(ids)), atol=2e-6)


def test_a_second_tensor_without_a_call_template_is_refused() -> None:
    """Without the template it could be a mask or an initial state: refused, not dropped."""
    x, second = np.ones((2, 3, 4)), np.ones((2, 3))
    lstm = {"units": 3}
    weights = {"kernel": np.ones((4, 12)), "recurrent_kernel": np.ones((3, 12))}
    with pytest.raises(LayerConfigUnsupported, match="called with 2 tensors"):
        LAYERS["LSTM"]([x, second], {**lstm, "use_bias": False}, weights)
    with pytest.raises(LayerConfigUnsupported, match="called with 2 tensors"):
        LAYERS["Dense"]([x, second], {}, {"kernel": np.ones((4, 2))})


def test_masked_recurrent_layer_end_to_end(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    model = masked_model(keras, MASKED_CASES["LSTM-sequences-backwards"])
    randomize_weights(model, seed=2)
    artifact = save_model(model)
    inputs = {artifact.graph.inputs[0].name: masked_sequences()}
    verdicts = layer_verdicts(runner_pool, artifact, inputs)
    assert set(verdicts[("keras-cpu", "accumulated")]) <= WITHIN_ROUNDING


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (
            lambda L, x: L.Attention(name="att")([L.Masking(0.1)(x), L.Masking(0.1)(x)]),
            "unsupported: att (Attention) inputs carrying a Keras mask",
        ),
        (
            lambda L, x: L.MultiHeadAttention(2, 3, name="mha")(x, x, use_causal_mask=True),
            "unsupported: mha (MultiHeadAttention) called with use_causal_mask",
        ),
    ],
)
def test_attention_the_port_would_compute_without_its_mask_is_refused(
    keras: Any, save_model: Any, runner_pool: RunnerPool, build: Any, reason: str
) -> None:
    """Keras applies these masks inside the layer, out of the graph's sight: the port names
    the node instead of computing something else, and keras-cpu still runs."""
    x = keras.Input((6, 3), name="x")
    artifact = save_model(keras.Model(x, build(keras.layers, x)))
    results = run_locally(
        runner_pool,
        artifact,
        {"x": masked_sequences()},
        backends=["keras-cpu", "numpy"],
        reference="numpy-f64",
    )
    assert results["numpy-f64"].reason.startswith(reason)
    assert results["keras-cpu"].status == "done"
