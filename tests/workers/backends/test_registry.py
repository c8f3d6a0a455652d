"""The registry: an id is checked and routed without importing any backend's module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workers.backends.registry import BACKEND_IDS, REGISTRY, UnknownBackend, parse_backends


def test_validating_ids_imports_neither_tensorflow_nor_playwright() -> None:
    probe = (
        "import sys\n"
        "from workers.backends.registry import backend_entry, parse_backends\n"
        "import app.main\n"
        "assert parse_backends('tfjs-webgl,keras-cpu') == ['tfjs-webgl', 'keras-cpu']\n"
        "assert backend_entry('tfjs-webgl').queue == 'browser'\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'playwright') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_unknown_id_fails_naming_every_valid_one() -> None:
    with pytest.raises(UnknownBackend) as refused:
        parse_backends("numpy, tpu")
    assert refused.value.status == 422
    assert all(backend in str(refused.value) for backend in BACKEND_IDS)


def test_every_line_names_a_runner_of_that_id() -> None:
    for backend, entry in REGISTRY.items():
        assert backend == entry.runner_class().BACKEND


def test_keras_jax_is_run_only_when_named() -> None:
    """It starts a JAX child process of its own: a run that names no backends leaves it out."""
    from workers.backends.registry import DEFAULT_BACKENDS

    assert "keras-jax" in BACKEND_IDS and "keras-jax" not in DEFAULT_BACKENDS
    assert set(BACKEND_IDS) - set(DEFAULT_BACKENDS) == {"keras-jax"}
    assert REGISTRY["keras-jax"].queue == "cpu"
    versions = REGISTRY["keras-jax"].runner_class().versions()
    assert versions["jax"] == __import__("jax").__version__
