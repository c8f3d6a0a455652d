"""keras.ops operations applied between layers (`x + 3.0`, `ops.mean(x, axis=1)`, the
NotEqual and Any a Masking layer's mask is made of), one small model per operation the
numpy port computes: keras-cpu, an implementation we did not write, and our float32 port
must both stay within float32 rounding of the float64 port, every node, accumulated and
isolated. Each operation is applied to a Dense layer's output, so there is float drift for
it to carry. A wrong formula, an ignored constructor argument (Celu's alpha) or a misread
call template (a constant's side, an axis, a slice) shows up as a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from tests.workers.backends.numpy.test_layers import (
    assert_within_rounding,
    layer_verdicts,
    recipe_inputs,
    saved_case,
)
from tests.workers.backends.numpy.test_masks import MASK_VALUE, masked_sequences
from workers.backends.execution import run_locally
from workers.backends.numpy.operations import OPERATIONS
from workers.backends.pool import RunnerPool
from workers.engine.compare import compare
from workers.engine.graph import OPERATION_PREFIX
from workers.engine.inputs import InputRecipe
from workers.engine.results import MODES
from workers.engine.unroll import capture_model

Builder = Callable[[Any], Any]
UNITS = 6
# Dense outputs of a few units in size: past HardSigmoid's and HardTanh's kinks, Relu6's
# cap after a scaling, SparsePlus's pieces.
RECIPE = InputRecipe("uniform", batch=3, seed=7, low=-3.0, high=3.0)


def on_dense(apply: Callable[[Any, Any], Any], shape: tuple[int, ...] = (UNITS,)) -> Builder:
    """`apply(ops, h)` on the output h of a Dense(UNITS) layer."""

    def build(keras: Any) -> Any:
        inp = keras.Input(shape, name="x")
        h = keras.layers.Dense(UNITS, name="dense")(inp)
        return keras.Model(inp, apply(keras.ops, h))

    return build


def on_two_dense(
    apply: Callable[[Any, Any, Any], Any], shape: tuple[int, ...] = (UNITS,)
) -> Builder:
    """`apply(ops, a, b)` on two Dense(UNITS) layers' outputs: tensors on both sides."""

    def build(keras: Any) -> Any:
        inp = keras.Input(shape, name="x")
        a = keras.layers.Dense(UNITS, name="a")(inp)
        b = keras.layers.Dense(UNITS, name="b")(inp)
        return keras.Model(inp, apply(keras.ops, a, b))

    return build


def abs_class(keras: Any) -> Any:
    """keras.ops.abs records an Absolute node; Keras's Abs (a subclass of Absolute that
    the loader accepts) only appears when the class itself is called."""
    from keras.src.ops.numpy import Abs

    return on_dense(lambda ops, h: Abs()(h))(keras)


def masking_concatenate(keras: Any) -> Any:
    """A masked branch concatenated with an unmasked one, read by a mask-taking pooling
    layer: Keras builds the merged mask itself (Masking's NotEqual and Any, then
    Concatenate.compute_mask's ExpandDims, ZerosLike, LogicalOr, OnesLike, Concatenate
    and Any), nodes no user wrote."""
    L = keras.layers
    inp = keras.Input((6, 3), name="x")
    masked = L.Masking(MASK_VALUE, name="masking")(inp)
    dense = L.Dense(3, name="dense")(inp)
    merged = L.Concatenate(name="merged")([masked, dense])
    return keras.Model(inp, L.GlobalAveragePooling1D(name="pool")(merged))


def masking_add(keras: Any) -> Any:
    """Two masked branches added: Add.compute_mask ORs their masks (LogicalOr), which the
    LSTM then reads; the steps the Masking layer masks decide which steps it skips."""
    L = keras.layers
    inp = keras.Input((6, 3), name="x")
    masked = L.Masking(MASK_VALUE, name="masking")(inp)
    a = L.Dense(4, name="a")(masked)
    b = L.Dense(4, name="b")(masked)
    return keras.Model(inp, L.LSTM(3, name="lstm")(L.Add(name="add")([a, b])))


# `ops.relu(h)` is exactly 0 wherever h < 0 on every backend: a mask that is neither all
# True nor all False.
def positive(ops: Any, h: Any) -> Any:
    return ops.not_equal(ops.relu(h), 0.0)


CASES: dict[str, Builder] = {
    # Arithmetic with a python constant on either side, and between two tensors.
    "Add-constant": on_dense(lambda ops, h: h + 3.0),
    "Add-tensors": on_two_dense(lambda ops, a, b: ops.add(a, b)),
    "Subtract-constant-first": on_dense(lambda ops, h: 2.0 - h),
    "Subtract-tensors": on_two_dense(lambda ops, a, b: a - b),
    "Multiply-constant": on_dense(lambda ops, h: h * 0.1),
    "Multiply-tensors": on_two_dense(lambda ops, a, b: a * b),
    "Divide-constant": on_dense(lambda ops, h: ops.divide(h, 3.0)),
    "Divide-by-positive-tensor": on_two_dense(lambda ops, a, b: ops.divide(a, ops.exp(b))),
    "TrueDivide-operator": on_dense(lambda ops, h: h / 3.0),
    "TrueDivide-constant-first": on_dense(lambda ops, h: 1.0 / (ops.square(h) + 1.0)),
    "Power-square": on_dense(lambda ops, h: ops.power(h, 2.0)),
    "Power-operator-cube": on_dense(lambda ops, h: h**3),
    "Maximum-constant": on_dense(lambda ops, h: ops.maximum(h, 0.5)),
    "Maximum-tensors": on_two_dense(lambda ops, a, b: ops.maximum(a, b)),
    "Minimum-constant-first": on_dense(lambda ops, h: ops.minimum(-0.5, h)),
    "Minimum-tensors": on_two_dense(lambda ops, a, b: ops.minimum(a, b)),
    "Matmul-scores": on_two_dense(
        lambda ops, a, b: ops.matmul(a, ops.transpose(b, (0, 2, 1))), shape=(4, 5)
    ),
    "Negative": on_dense(lambda ops, h: -h),
    "Absolute": on_dense(lambda ops, h: ops.abs(h)),
    "Abs": abs_class,
    "Square": on_dense(lambda ops, h: ops.square(h)),
    "Sqrt-of-abs": on_dense(lambda ops, h: ops.sqrt(ops.abs(h))),
    "Exp": on_dense(lambda ops, h: ops.exp(h)),
    "Log-of-abs-plus-one": on_dense(lambda ops, h: ops.log(ops.abs(h) + 1.0)),
    "Sin": on_dense(lambda ops, h: ops.sin(h)),
    "Cos": on_dense(lambda ops, h: ops.cos(h)),
    "Sign": on_dense(lambda ops, h: ops.sign(h)),
    "Reciprocal-bounded": on_dense(lambda ops, h: ops.reciprocal(ops.square(h) + 1.0)),
    "Erf": on_dense(lambda ops, h: ops.erf(h)),
    # keras.ops.nn activations: parameterless, and those whose parameter is in the config.
    "Relu": on_dense(lambda ops, h: ops.relu(h)),
    "Relu6-scaled": on_dense(lambda ops, h: ops.relu6(h * 4.0)),
    "Sigmoid": on_dense(lambda ops, h: ops.sigmoid(h)),
    "Softplus": on_dense(lambda ops, h: ops.softplus(h)),
    "Softsign": on_dense(lambda ops, h: ops.softsign(h)),
    "Silu": on_dense(lambda ops, h: ops.silu(h)),
    "HardSigmoid-scaled": on_dense(lambda ops, h: ops.hard_sigmoid(h * 2.0)),
    "HardSilu-scaled": on_dense(lambda ops, h: ops.hard_silu(h * 2.0)),
    "Tanh-halved": on_dense(lambda ops, h: ops.tanh(h) * 0.5),
    "LogSigmoid": on_dense(lambda ops, h: ops.log_sigmoid(h)),
    "Selu": on_dense(lambda ops, h: ops.selu(h)),
    "Celu": on_dense(lambda ops, h: ops.celu(h)),
    "Celu-alpha": on_dense(lambda ops, h: ops.celu(h, alpha=0.5)),
    "HardTanh": on_dense(lambda ops, h: ops.hard_tanh(h)),
    "SparsePlus": on_dense(lambda ops, h: ops.sparse_plus(h)),
    "Squareplus": on_dense(lambda ops, h: ops.squareplus(h)),
    "Squareplus-b": on_dense(lambda ops, h: ops.squareplus(h, b=1)),
    "TanhShrink": on_dense(lambda ops, h: ops.tanh_shrink(h)),
    "Gelu-approximate": on_dense(lambda ops, h: ops.gelu(h)),
    "Gelu-exact": on_dense(lambda ops, h: ops.gelu(h, approximate=False)),
    "Elu-alpha": on_dense(lambda ops, h: ops.elu(h, alpha=0.5)),
    "LeakyRelu-slope": on_dense(lambda ops, h: ops.leaky_relu(h, negative_slope=0.1)),
    "Softmax-last": on_dense(lambda ops, h: ops.softmax(h)),
    "Softmax-axis1": on_dense(lambda ops, h: ops.softmax(h, axis=1), shape=(4, 5)),
    "LogSoftmax-axis1": on_dense(lambda ops, h: ops.log_softmax(h, axis=1), shape=(4, 5)),
    "Clip": on_dense(lambda ops, h: ops.clip(h, -0.5, 0.5)),
    "Cast-float32": on_dense(lambda ops, h: ops.cast(h, "float32") * 2.0),
    # Reductions, with and without kept dimensions, over one axis and several.
    "Mean-keepdims": on_dense(lambda ops, h: ops.mean(h, axis=1, keepdims=True)),
    "Mean-axes": on_dense(lambda ops, h: ops.mean(h, axis=(1, 2)), shape=(4, 5)),
    "Sum-axis1": on_dense(lambda ops, h: ops.sum(h, axis=1), shape=(4, 5)),
    "Sum-all": on_dense(lambda ops, h: ops.sum(h)),
    "Max-last": on_dense(lambda ops, h: ops.max(h, axis=-1)),
    "Max-initial": on_dense(lambda ops, h: ops.max(h, axis=-1, keepdims=True, initial=3.0)),
    "Min-axis1-keepdims": on_dense(lambda ops, h: ops.min(h, axis=1, keepdims=True), (4, 5)),
    "Min-initial": on_dense(lambda ops, h: ops.min(h, axis=-1, initial=-1.7)),
    # Shapes: the batch axis goes through each of them.
    "Reshape": on_dense(lambda ops, h: ops.reshape(h, (-1, 2, 3))),
    "Transpose": on_dense(lambda ops, h: ops.transpose(h, (0, 2, 1)), shape=(4, 5)),
    "Transpose-reversed": on_dense(lambda ops, h: ops.transpose(h), shape=(4, 5)),
    "ExpandDims": on_dense(lambda ops, h: ops.expand_dims(h, axis=1)),
    "Squeeze": on_dense(lambda ops, h: ops.squeeze(ops.expand_dims(h, -1), axis=-1)),
    "Concatenate-last": on_two_dense(lambda ops, a, b: ops.concatenate([a, b], axis=-1)),
    "Concatenate-axis1": on_two_dense(
        lambda ops, a, b: ops.concatenate([a, b], axis=1), shape=(4, 5)
    ),
    "Stack-axis1": on_two_dense(lambda ops, a, b: ops.stack([a, b], axis=1)),
    "GetItem-slice": on_dense(lambda ops, h: h[:, 1:3]),
    "GetItem-index-step": on_dense(lambda ops, h: h[:, 0, ::2], shape=(4, 5)),
    "GetItem-ellipsis-newaxis": on_dense(lambda ops, h: h[..., -1, None], shape=(4, 5)),
    # Masks: boolean outputs, which every backend hands over as 0.0 and 1.0.
    "NotEqual-relu": on_dense(positive),
    "Equal-clipped": on_dense(lambda ops, h: ops.equal(ops.clip(h, -0.5, 0.5), 0.5)),
    "LogicalOr": on_two_dense(lambda ops, a, b: ops.logical_or(positive(ops, a), positive(ops, b))),
    "LogicalAnd": on_two_dense(
        lambda ops, a, b: ops.logical_and(positive(ops, a), positive(ops, b))
    ),
    "LogicalNot": on_dense(lambda ops, h: ops.logical_not(positive(ops, h))),
    "Any-axis1": on_dense(lambda ops, h: ops.any(positive(ops, h), axis=1), shape=(4, 5)),
    "All-keepdims": on_dense(
        lambda ops, h: ops.all(positive(ops, h), axis=1, keepdims=True), shape=(2, 5)
    ),
    "ZerosLike": on_dense(lambda ops, h: h + ops.zeros_like(h)),
    "OnesLike": on_dense(lambda ops, h: h * ops.ones_like(h)),
    "Multiply-by-mask": on_dense(lambda ops, h: h * positive(ops, h)),
    "Any-masking-concatenate": masking_concatenate,
    "LogicalOr-masking-add": masking_add,
}
# Cases whose input sequences hold steps equal to MASK_VALUE: uniform inputs never would.
MASKED_INPUT = {"Any-masking-concatenate", "LogicalOr-masking-add"}
BOOLEAN_OPERATIONS = ("NotEqual", "Equal", "LogicalOr", "LogicalAnd", "LogicalNot", "Any", "All")


def mixed(values: np.ndarray) -> bool:
    return set(np.unique(values)) == {0.0, 1.0}


def partly(value: float) -> Callable[[np.ndarray], bool]:
    """Some outputs, not all, are the (float32) constant."""
    return lambda values: 0 < np.count_nonzero(values == np.float32(value)) < values.size


DISCRIMINATING: dict[str, Callable[[np.ndarray], bool]] = {
    **{case: mixed for case in CASES if case.split("-")[0] in BOOLEAN_OPERATIONS},
    "Max-initial": partly(3.0),
    "Min-initial": partly(-1.7),
}


def operation_of(case: str) -> str:
    return OPERATION_PREFIX + case.split("-")[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_operation_within_rounding_of_float64(
    case: str, keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    model, artifact = saved_case(CASES, case, keras, save_model)
    classes = {layer.class_name for layer in artifact.graph.compute_layers}
    assert operation_of(case) in classes, classes  # the case exercises what it is named for
    if case in MASKED_INPUT:
        inputs = {artifact.graph.inputs[0].name: masked_sequences(batch=3)}
    else:
        inputs = recipe_inputs(artifact, RECIPE)
    if case in DISCRIMINATING:
        # The inputs must tell a right port from a plausible wrong one: a mask that is
        # all True agrees with a port that always answers True; a reduction whose
        # `initial` never wins, with a port that ignores it. Judged on Keras's outputs.
        capture = capture_model(keras, model)
        outputs = capture.model(list(inputs.values()))
        named = [
            np.asarray(out, np.float64)
            for name, out in zip(capture.names, outputs, strict=True)
            if OPERATION_PREFIX + type(capture.nodes[name].operation).__name__ == operation_of(case)
        ]
        assert named and any(DISCRIMINATING[case](out) for out in named), named
    assert_within_rounding(layer_verdicts(runner_pool, artifact, inputs))


def test_every_operation_has_a_case() -> None:
    """An operation added to the port's table without a case here would be trusted as the
    reference's formula without ever being checked against Keras; a case named for an
    operation the table lacks would check nothing of ours."""
    covered = {operation_of(case) for case in CASES}
    assert covered >= set(OPERATIONS), sorted(set(OPERATIONS) - covered)
    assert covered <= set(OPERATIONS), sorted(covered - set(OPERATIONS))


def test_a_cast_that_changes_values_is_unsupported_not_ignored(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """A cast to float32 keeps the port's own precision; one to int32 would change the
    values, so the numpy backends refuse it, naming it, while keras-cpu runs it."""
    artifact = save_model(on_dense(lambda ops, h: ops.cast(h * 4.0, "int32"))(keras))
    inputs = {"x": np.random.default_rng(2).uniform(-1, 1, (2, UNITS)).astype(np.float32)}
    results = run_locally(
        runner_pool, artifact, inputs, backends=["keras-cpu", "numpy"], reference="numpy-f64"
    )
    assert results["numpy-f64"].status == "unsupported"
    assert "(ops.Cast) cast to 'int32'" in results["numpy-f64"].reason
    assert results["keras-cpu"].status == "done"


def test_float_constants_are_keras_float32_constants(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Keras compares a float32 tensor with the python float 0.1 as float32(0.1): the
    float64 reference must too, or the mask `x != 0.1` of inputs holding float32(0.1)
    would be True everywhere in the reference and both backends flagged for Keras's own
    semantics. The Masking layer compares with its mask_value 0.1 the same way."""
    inp = keras.Input((6, 3), name="x")
    mask = keras.ops.not_equal(inp, 0.1)
    kept = keras.ops.any(mask, axis=-1)
    masked = keras.layers.Masking(0.1, name="masking")(inp)
    artifact = save_model(keras.Model(inp, [mask, kept, masked]))
    mask_node, kept_node = (t._keras_history.operation.name for t in (mask, kept))
    x = masked_sequences(batch=3)
    assert MASK_VALUE == 0.1 and np.all(x.astype(np.float64) != 0.1)  # only float32(0.1)
    results = run_locally(
        runner_pool, artifact, {"x": x}, backends=["keras-cpu", "numpy"], reference="numpy-f64"
    )
    reference = results["numpy-f64"].outputs["accumulated"]
    expected = x != np.float32(0.1)
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(reference[mask_node], expected)
    assert np.array_equal(reference[kept_node], np.any(expected, axis=-1))
    assert np.array_equal(reference["masking"], np.where(expected.any(-1, keepdims=True), x, 0))
    comparisons = compare(artifact.graph, results, against="numpy-f64")
    assert {c.backend for c in comparisons} == {"keras-cpu", "numpy"}
    for comparison in comparisons:
        verdicts = {row.layer: row.divergence.verdict for row in comparison.layers}
        assert set(verdicts.values()) == {"identical"}, (comparison.backend, verdicts)


def test_operation_outside_the_port_is_reported_and_keras_still_runs(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """A model with an operation the port lacks (ops.cumsum) cannot have the numpy-f64
    reference: both numpy backends say which node and which operation, before running
    anything; keras-cpu, which runs any Keras model, still gives every node's output, with
    the reason it has no isolated mode; and there is nothing to compare against."""
    assert "ops.Cumsum" not in OPERATIONS
    inp = keras.Input((UNITS,), name="x")
    h = keras.layers.Dense(UNITS, name="dense")(inp)
    total = keras.ops.cumsum(h, axis=-1)
    squashed = keras.ops.tanh(total)
    model = keras.Model(inp, squashed)
    cumsum, tanh = (t._keras_history.operation.name for t in (total, squashed))
    randomize_weights(model, seed=9)
    artifact = save_model(model)
    assert [layer.class_name for layer in artifact.graph.compute_layers] == [
        "Dense",
        "ops.Cumsum",
        "ops.Tanh",
    ]
    inputs = recipe_inputs(artifact, RECIPE)
    results = run_locally(
        runner_pool,
        artifact,
        inputs,
        backends=["keras-cpu", "numpy"],
        reference="numpy-f64",
        modes=MODES,
    )
    for backend in ("numpy-f64", "numpy"):
        assert results[backend].status == "unsupported", backend
        assert results[backend].reason == f"unsupported: {cumsum} (ops.Cumsum)", backend
        assert results[backend].outputs == {}
    keras_cpu = results["keras-cpu"]
    assert keras_cpu.status == "done", keras_cpu.reason
    assert keras_cpu.reason == "isolated mode skipped: the reference did not run"
    outputs = keras_cpu.outputs["accumulated"]
    assert set(keras_cpu.outputs) == {"accumulated"}
    np.testing.assert_allclose(outputs[cumsum], np.cumsum(outputs["dense"], axis=-1), atol=1e-5)
    np.testing.assert_allclose(outputs[tanh], np.tanh(outputs[cumsum]), atol=1e-6)
    assert compare(artifact.graph, results, against="numpy-f64", modes=MODES) == []
