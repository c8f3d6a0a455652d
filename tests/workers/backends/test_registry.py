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


def test_keras_jax_tflite_and_c_are_run_only_when_named() -> None:
    """keras-jax starts a JAX child process of its own, each TFLite form a conversion and
    each C form a compile: a run that names no backends leaves them out. All run on the
    cpu queue."""
    from workers.backends.registry import DEFAULT_BACKENDS

    named = {"keras-jax", "tflite", "tflite-f16", "tflite-dynamic", "tflite-int8"}
    named |= {"c", "c-fastmath"}
    assert named <= set(BACKEND_IDS)
    assert set(BACKEND_IDS) - set(DEFAULT_BACKENDS) == named
    assert {REGISTRY[backend].queue for backend in named} == {"cpu"}
    versions = REGISTRY["keras-jax"].runner_class().versions()
    assert versions["jax"] == __import__("jax").__version__
    versions = REGISTRY["tflite-int8"].runner_class().versions()
    assert versions["ai-edge-litert"] == __import__("ai_edge_litert").__version__


def test_each_backend_declares_its_nominal_precision() -> None:
    """What its drift is judged against: the quantized and float16 forms are not float32."""
    from workers.backends.registry import backend_precision

    assert backend_precision("numpy-f64") == "float64"
    assert backend_precision("keras-cpu") == "float32"
    assert backend_precision("tflite") == "float32"
    assert backend_precision("tflite-f16") == backend_precision("tfjs-webgl-f16") == "float16"
    assert backend_precision("tflite-dynamic") == backend_precision("tflite-int8") == "int8"
    assert backend_precision("keras-gpu") == "tf32"
    assert backend_precision("keras-gpu-fp32") == "float32"
    assert backend_precision("ext:my-port") == "float32"
