"""Example models are reproducible: fixed seeds give the same weights on every build."""

from pathlib import Path

import numpy as np

from workers.engine.examples import write_example
from workers.engine.loading import load_artifact


def test_rebuilding_an_example_gives_identical_weights(keras: object, tmp_path: Path) -> None:
    first = load_artifact(write_example("autoencoder", tmp_path / "a")).graph
    second = load_artifact(write_example("autoencoder", tmp_path / "b")).graph
    for one, two in zip(first.compute_layers, second.compute_layers, strict=True):
        assert one.weights.keys() == two.weights.keys()
        for name in one.weights:
            assert np.array_equal(one.weights[name], two.weights[name]), (one.name, name)
    units = [layer.config["units"] for layer in first.compute_layers if layer.class_name == "Dense"]
    assert units == [128, 64, 2, 64, 128, 784]
    activations = [
        layer.config["activation"]
        for layer in first.compute_layers
        if layer.class_name == "Activation"
    ]
    assert activations == ["relu", "relu", "tanh", "relu", "relu", "tanh"]
