"""keras-cpu gives what a user's `model.predict` gives: its batches go through the
compiled predict function one by one, without `predict`'s tf.data pipeline, and must
come out bit for bit as `predict` would give them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from workers.backends.pool import RunnerPool
from workers.engine.loading import ModelArtifact
from workers.engine.options import EngineOptions
from workers.engine.unroll import capture_model


def two_inputs(keras: Any) -> Any:
    """Two inputs, a convolution (oneDNN picks its kernels by batch shape) and a dense head."""
    keras.utils.set_random_seed(11)
    L = keras.layers
    image = keras.Input((6, 6, 2), name="image")
    extra = keras.Input((3,), name="extra")
    features = L.Flatten(name="flat")(L.Conv2D(4, 3, activation="relu", name="conv")(image))
    joined = L.Concatenate(name="join")([features, L.Dense(5, name="side")(extra)])
    return keras.Model([image, extra], L.Dense(2, name="head")(joined))


@pytest.mark.parametrize("batch_size", [3, 256])
def test_outputs_are_predicts_bit_for_bit_in_whole_and_partial_batches(
    batch_size: int,
    keras: Any,
    engine_options: EngineOptions,
    save_model: Callable[..., ModelArtifact],
) -> None:
    artifact = save_model(two_inputs(keras))
    rng = np.random.default_rng(5)
    inputs = {
        "image": rng.normal(size=(7, 6, 6, 2)).astype(np.float32),
        "extra": rng.normal(size=(7, 3)).astype(np.float32),
    }
    with RunnerPool(replace(engine_options, keras_batch_size=batch_size)) as pool:
        outputs = pool.runner("keras-cpu").run(artifact, inputs)

    capture = capture_model(keras, keras.saving.load_model(artifact.path, compile=False))
    expected = capture.model.predict(
        [inputs["image"], inputs["extra"]], batch_size=batch_size, verbose=0
    )
    assert set(outputs) == set(capture.names) >= {"conv", "join", "head"}
    for name, want in zip(capture.names, expected, strict=True):
        assert outputs[name].shape == want.shape == (7, *want.shape[1:]), name
        np.testing.assert_array_equal(outputs[name], want, err_msg=name)
