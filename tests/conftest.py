"""Shared fixtures: one TensorFlow import and one warm keras-cpu runner per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.keras_env import import_keras
from workers.model_loading import ModelArtifact, load_artifact


@pytest.fixture(scope="session")
def keras() -> Any:
    return import_keras()


def randomize_weights(model: Any, seed: int) -> None:
    """Seeded weights with every entry non-trivial (BN variances kept positive)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if variable.name == "moving_variance":
                value = rng.uniform(0.5, 1.5, shape)
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 4
                value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
            variable.assign(value.astype(np.float32))


@pytest.fixture
def save_model(tmp_path: Path) -> Callable[..., ModelArtifact]:
    """Save a Keras model to a temp file (.keras or .h5) and load it as an artifact."""

    def save(model: Any, name: str = "model", suffix: str = ".keras") -> ModelArtifact:
        path = tmp_path / f"{name}{suffix}"
        model.save(path)
        return load_artifact(path)

    return save


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ModelArtifact]:
    """An example model by name, built once per test session."""
    from workers.examples import write_example

    directory = tmp_path_factory.mktemp("examples")
    built: dict[str, ModelArtifact] = {}

    def get(name: str) -> ModelArtifact:
        if name not in built:
            built[name] = load_artifact(write_example(name, directory))
        return built[name]

    return get
