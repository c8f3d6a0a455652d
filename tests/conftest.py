"""Shared fixtures: one TensorFlow import and one pool of warm runners (TensorFlow, the
browser) per test process (`make test` runs two, pytest-xdist, a test file whole in
each). Helpers that are not fixtures live in tests/support.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.config import settings
from workers.backends.pool import RunnerPool
from workers.engine.keras_env import import_keras
from workers.engine.loading import ModelArtifact, load_artifact
from workers.engine.options import EngineOptions


@pytest.fixture(scope="session")
def engine_options() -> EngineOptions:
    """The engine's options as the service would build them from this environment."""
    return settings.engine_options()


@pytest.fixture(scope="session")
def keras(engine_options: EngineOptions) -> Any:
    return import_keras(engine_options.onednn)


@pytest.fixture(scope="session")
def runner_pool(engine_options: EngineOptions) -> Iterator[RunnerPool]:
    """Every backend's runner, activated on first use and kept warm for the session."""
    with RunnerPool(engine_options) as pool:
        yield pool


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
    from workers.engine.examples import write_example

    directory = tmp_path_factory.mktemp("examples")
    built: dict[str, ModelArtifact] = {}

    def get(name: str) -> ModelArtifact:
        if name not in built:
            built[name] = load_artifact(write_example(name, directory))
        return built[name]

    return get
