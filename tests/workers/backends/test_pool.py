"""A process's warm runners: activated once, kept, and all deactivated on close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.backends.base import BackendUnavailable
from workers.backends.pool import RunnerPool
from workers.engine.options import EngineOptions


def test_a_runner_is_activated_once_and_deactivated_by_close(example) -> None:
    artifact = example("dense10x50")
    inputs = {artifact.graph.inputs[0].name: np.zeros((2, 50), np.float32)}
    pool = RunnerPool(EngineOptions())
    runner = pool.runner("numpy")
    assert runner.active and pool.runner("numpy") is runner
    first = runner.run(artifact, inputs)
    assert pool.runner("numpy").run(artifact, inputs).keys() == first.keys()
    other = pool.runner("numpy-f64")
    pool.close()
    assert not runner.active and not other.active
    assert pool.runner("numpy") is not runner  # a closed pool starts afresh


def test_a_runner_that_cannot_activate_is_not_kept(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium"
    pool = RunnerPool(EngineOptions(chromium_path=missing))
    for _ in range(2):  # each job tries again: nothing half-made was kept
        with pytest.raises(BackendUnavailable, match=str(missing)):
            pool.runner("tfjs-cpu")
    pool.close()
