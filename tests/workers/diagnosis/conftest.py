"""TensorFlow for the oracles, imported once the session's Keras fixture set its
environment (oneDNN, the backend) before TensorFlow's first import."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def tf(keras: Any) -> Any:
    import tensorflow

    return tensorflow
