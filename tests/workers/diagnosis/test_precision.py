"""The verdict of a backend of reduced nominal precision, both sides: a layer computed
correctly in that precision is 'reduced-precision', the same layer with a bug is
'mismatch'. Candidates are built from TensorFlow ops (tf.cast to float16, TF32 rounding
through float16, fake-quantization), as in test_hypotheses; the real TFLite int8 and
float16 backends are checked in tests/workers/backends/tflite."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.workers.diagnosis.test_hypotheses import (
    Built,
    Corrupt,
    _clone,
    built,
    int8_quantized,
    keras_pass,
    only,
    reweighted,
    stored_as,
    tf32_matmul,
)
from workers.diagnosis.diagnose import Budget, diagnose_outputs

__all__ = ["built"]  # the module-scoped fixture, shared with test_hypotheses


def in_float16(corrupt: Corrupt) -> Corrupt:
    """A layer's (possibly buggy) output stored in float16."""
    return lambda tf, layer, x: tf.cast(tf.cast(corrupt(tf, layer, x), tf.float16), tf.float32)


def without_bias(corrupt: Corrupt) -> Corrupt:
    """`corrupt` applied to a copy of the layer whose bias is zero."""

    def apply(tf: Any, layer: Any, x: Any) -> Any:
        copy = _clone(layer, x)
        kernel, bias = layer.get_weights()
        copy.set_weights([kernel, np.zeros_like(bias)])
        return corrupt(tf, copy, x)

    return apply


def with_bias_doubled(corrupt: Corrupt) -> Corrupt:
    def apply(tf: Any, layer: Any, x: Any) -> Any:
        copy = _clone(layer, x)
        kernel, bias = layer.get_weights()
        copy.set_weights([kernel, 2.0 * bias])
        return corrupt(tf, copy, x)

    return apply


TRANSPOSED = reweighted(only("kernel", lambda tf, w: tf.transpose(tf.reshape(w, w.shape[::-1]))))

# (precision, model, layer, the layer computed in that precision, the same with a bug)
CASES = (
    ("float16", "dense-tanh", "d2", stored_as("float16"), in_float16(TRANSPOSED)),
    ("float16", "conv-same", "c2", stored_as("float16"), without_bias(stored_as("float16"))),
    ("tf32", "dense-tanh", "d2", tf32_matmul, with_bias_doubled(tf32_matmul)),
    ("int8", "conv-same", "c2", int8_quantized, without_bias(int8_quantized)),
)


def judged(built: Built, candidate: dict[str, np.ndarray], precision: str) -> dict[str, str]:
    """Each layer's verdict at `precision`, had its rel_l2 said 'mismatch'."""
    found = diagnose_outputs(
        built.graph,
        candidate,
        built.fed,
        mode="accumulated",
        budget=Budget(60),
        precision=precision,
    )
    return {layer: local.at_precision("mismatch") for layer, local in found.items()}


@pytest.mark.parametrize(
    ("precision", "model", "layer", "correct", "buggy"),
    CASES,
    ids=[f"{case[0]}-{case[1]}" for case in CASES],
)
def test_a_layer_within_its_precision_is_reduced_precision_and_a_bug_a_mismatch(
    tf: Any, built: Any, precision: str, model: str, layer: str, correct: Corrupt, buggy: Corrupt
) -> None:
    case = built(model)
    fine = judged(case, keras_pass(tf, case, layer, correct), precision)
    assert set(fine.values()) == {"reduced-precision"}, fine
    broken = judged(case, keras_pass(tf, case, layer, buggy), precision)
    assert broken == {**fine, layer: "mismatch"}


def test_float32_backends_keep_their_verdict(tf: Any, built: Any) -> None:
    """No precision bound for a float32 backend: its verdict stays the rel_l2 one."""
    case = built("dense-tanh")
    found = diagnose_outputs(
        case.graph,
        keras_pass(tf, case, "d2", stored_as("float16")),
        case.fed,
        mode="accumulated",
        budget=Budget(60),
    )
    assert all(local.precision_bound is None for local in found.values())
    assert {local.at_precision("mismatch") for local in found.values()} == {"mismatch"}


def test_a_layer_within_its_precision_is_explained_by_it_and_a_bug_by_its_cause(
    tf: Any, built: Any
) -> None:
    """A float16 backend's layer within float16's allowance is explained by float16 and
    tested for nothing else; the same layer transposed is tested for every cause, and
    the transposed kernel explains it."""
    case = built("dense-tanh")

    def diagnosis(corrupt: Corrupt) -> dict[str, bool]:
        found = diagnose_outputs(
            case.graph,
            keras_pass(tf, case, "d2", corrupt),
            case.fed,
            mode="accumulated",
            budget=Budget(60),
            precision="float16",
        )["d2"]
        assert found.diagnosis is not None
        return {e.hypothesis: e.explains for e in found.diagnosis}

    fine = diagnosis(stored_as("float16"))
    assert fine["float16-activations"]
    assert set(fine) <= {"float16-weights", "float16-activations"}
    broken = diagnosis(in_float16(TRANSPOSED))
    assert broken["kernel-transposed"]
    assert next(iter(broken)) == "kernel-transposed"
    assert {"bias-missing", "bfloat16", "int8-quantization"} <= set(broken)
