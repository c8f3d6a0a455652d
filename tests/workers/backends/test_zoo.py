"""The zoo's fast models end to end: every node of every backend within rounding of our
float64 port, with keras-cpu as the independent second opinion. `make zoo` runs the
whole zoo (twelve keras.applications architectures too); this is the part `make test`
can afford: MobileNetV3Small (keras.ops nodes, hard-swish, keepdims pooling), a
nested transfer-learning classifier, token ids through Embedding + LSTM, GRU and
Bidirectional, and a graph of keras.ops arithmetic with a shared layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.zoo import run_zoo_model
from workers.backends.pool import RunnerPool
from workers.engine.zoo import ZOO

BACKENDS = ["keras-cpu", "numpy", "tfjs-cpu"]
FAST = sorted(name for name, model in ZOO.items() if model.fast)


@pytest.mark.parametrize("name", FAST)
def test_fast_zoo_model_is_within_rounding_on_every_backend(
    name: str, runner_pool: RunnerPool, tmp_path: Path
) -> None:
    row = run_zoo_model(runner_pool, ZOO[name], BACKENDS, tmp_path)
    assert row.failures == {}
    assert set(row.verdicts) == set(BACKENDS)
    for backend, counts in row.verdicts.items():
        assert sum(counts.values()) == row.layers, backend
    assert row.within_rounding, row.as_dict()


@pytest.mark.parametrize("name", ["transfer_classifier", "sequence_model"])
def test_a_cnn_and_a_recurrent_model_on_wasm_and_webgl(
    name: str, runner_pool: RunnerPool, tmp_path: Path
) -> None:
    row = run_zoo_model(runner_pool, ZOO[name], ["tfjs-wasm", "tfjs-webgl"], tmp_path)
    assert row.failures == {}
    assert row.within_rounding, row.as_dict()


def test_mobilenet_v2_as_generated_c_strict_and_with_fast_math(
    runner_pool: RunnerPool, tmp_path: Path
) -> None:
    """The transfer classifier's nested MobileNetV2 (zero padding before stride-2
    convolutions, depthwise convolutions, batch normalisation, ReLU6, residual adds) as
    the C port: the strict build within rounding on every layer, fast math never a
    mismatch on a correct model."""
    row = run_zoo_model(runner_pool, ZOO["transfer_classifier"], ["c", "c-fastmath"], tmp_path)
    assert row.failures == {}
    assert sum(row.verdicts["c"].values()) == row.layers > 100
    assert set(row.verdicts["c"]) <= {"identical", "rounding"}, row.as_dict()
    assert "mismatch" not in row.verdicts["c-fastmath"], row.as_dict()
