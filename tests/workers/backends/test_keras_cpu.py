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
    """Two inputs, a convolution (oneDNN picks its kernels by batch shape), a dense head
    and an output summed to a scalar (`predict` stacks one per batch)."""
    keras.utils.set_random_seed(11)
    L = keras.layers
    image = keras.Input((6, 6, 2), name="image")
    extra = keras.Input((3,), name="extra")
    features = L.Flatten(name="flat")(L.Conv2D(4, 3, activation="relu", name="conv")(image))
    joined = L.Concatenate(name="join")([features, L.Dense(5, name="side")(extra)])
    head = L.Dense(2, name="head")(joined)
    return keras.Model([image, extra], [head, keras.ops.sum(head)])


def sample_inputs(samples: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(samples)
    return {
        "image": rng.normal(size=(samples, 6, 6, 2)).astype(np.float32),
        "extra": rng.normal(size=(samples, 3)).astype(np.float32),
    }


@pytest.mark.parametrize("batch_size", [3, 256])
def test_outputs_are_predicts_bit_for_bit_in_whole_and_partial_batches(
    batch_size: int,
    keras: Any,
    engine_options: EngineOptions,
    save_model: Callable[..., ModelArtifact],
) -> None:
    """One warm runner, jobs of 7, 256 and 7 samples again: each job as `predict` gives
    it (whole batches, a partial one, and the traced function's batch shape changing
    between jobs)."""
    artifact = save_model(two_inputs(keras))
    capture = capture_model(keras, keras.saving.load_model(artifact.path, compile=False))
    with RunnerPool(replace(engine_options, keras_batch_size=batch_size)) as pool:
        for samples in (7, 256, 7):
            inputs = sample_inputs(samples)
            outputs = pool.runner("keras-cpu").run(artifact, inputs)
            expected = capture.model.predict(
                [inputs["image"], inputs["extra"]], batch_size=batch_size, verbose=0
            )
            assert set(outputs) == set(capture.names) >= {"conv", "join", "head"}
            for name, want in zip(capture.names, expected, strict=True):
                assert outputs[name].shape == want.shape, (samples, name)
                np.testing.assert_array_equal(outputs[name], want, err_msg=f"{samples} {name}")
            batches = -(-samples // batch_size)
            scalars = [w.shape for w in expected if w.ndim == 0 or w.shape[0] != samples]
            assert scalars == ([()] if batches == 1 else [(batches,)]), "a scalar per batch"
