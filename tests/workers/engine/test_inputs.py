"""Inputs: seeded generators, .npy/.npz files and shape checks that name both shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.engine.compare import compare
from workers.engine.inputs import InputError, InputRecipe, generate_inputs, load_input_file


@pytest.fixture
def artifact(keras: Any, save_model: Any) -> Any:
    return save_model(keras.Sequential([keras.Input((2, 3), name="x"), keras.layers.Dense(4)]))


def test_generators_follow_their_recipe(artifact: Any) -> None:
    ones = generate_inputs(InputRecipe("ones", batch=5), artifact.graph.input_shapes)["x"]
    assert ones.shape == (5, 2, 3) and ones.dtype == np.float32 and (ones == 1).all()
    uniform = generate_inputs(
        InputRecipe("uniform", batch=400, seed=3, low=2.0, high=3.0), artifact.graph.input_shapes
    )["x"]
    assert uniform.min() >= 2.0 and uniform.max() <= 3.0
    normal = generate_inputs(
        InputRecipe("normal", batch=2000, seed=3, mean=5.0, std=0.5), artifact.graph.input_shapes
    )["x"]
    assert abs(normal.mean() - 5.0) < 0.02 and abs(normal.std() - 0.5) < 0.02


def test_same_seed_same_inputs_other_seed_other_inputs(artifact: Any) -> None:
    first = generate_inputs(InputRecipe("normal", batch=2, seed=9), artifact.graph.input_shapes)[
        "x"
    ]
    again = generate_inputs(InputRecipe("normal", batch=2, seed=9), artifact.graph.input_shapes)[
        "x"
    ]
    other = generate_inputs(InputRecipe("normal", batch=2, seed=10), artifact.graph.input_shapes)[
        "x"
    ]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(InputError, match="low < high"):
        InputRecipe("uniform", low=1.0, high=1.0)
    with pytest.raises(InputError, match="batch must be at least 1"):
        InputRecipe("ones", batch=0)


def test_npy_with_the_wrong_shape_names_both_shapes(artifact: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((4, 3, 2), dtype=np.float32))
    with pytest.raises(
        InputError,
        match=r"\(4, 3, 2\) does not fit the model's input shape "
        r"\(batch, 2, 3\)",
    ):
        load_input_file(path, artifact.graph.input_shapes, 1 << 30)


def test_npy_is_cast_to_float32(artifact: Any, tmp_path: Path) -> None:
    path = tmp_path / "good.npy"
    np.save(path, np.arange(12, dtype=np.float64).reshape(2, 2, 3))
    loaded = load_input_file(path, artifact.graph.input_shapes, 1 << 30)["x"]
    assert loaded.dtype == np.float32 and loaded[1, 1, 2] == 11.0


def test_object_arrays_are_never_unpickled(artifact: Any, tmp_path: Path) -> None:
    path = tmp_path / "pickled.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="object arrays are never unpickled"):
        load_input_file(path, artifact.graph.input_shapes, 1 << 30)


def test_nan_and_inf_inputs_run_and_are_counted(
    artifact: Any, tmp_path: Path, runner_pool: RunnerPool
) -> None:
    values = np.ones((2, 2, 3), dtype=np.float32)
    values[0, 0, 0] = np.nan
    values[1, 1, 1] = np.inf
    path = tmp_path / "nonfinite.npy"
    np.save(path, values)
    inputs = load_input_file(path, artifact.graph.input_shapes, 1 << 30)
    results = run_locally(runner_pool, artifact, inputs, backends=["numpy"], reference="numpy-f64")
    [comparison] = compare(artifact.graph, results, against="numpy-f64")
    row = comparison.layers[0].divergence
    # A NaN or Inf in one feature spreads to every unit of that row's Dense output.
    assert row.nonfinite_reference == 8 and row.nonfinite_candidate == 8
    assert row.nonfinite_mismatch == 0
    assert row.verdict in {"identical", "rounding"}


TOKENS = {"tokens": (None, 5)}
INTEGER_INPUT = {"tokens": "int32"}


def test_randint_generates_int32_token_ids_in_range() -> None:
    recipe = InputRecipe("randint", batch=4, seed=1, low=0, high=7)
    ids = generate_inputs(recipe, TOKENS, INTEGER_INPUT)["tokens"]
    assert ids.dtype == np.int32 and ids.shape == (4, 5)
    assert ids.min() >= 0 and ids.max() < 7 and len(np.unique(ids)) > 1
    floats = generate_inputs(recipe, TOKENS)["tokens"]
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, ids)


def test_an_integer_input_is_never_fed_floats(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"input 'tokens' takes integers .* randint"):
        generate_inputs(InputRecipe("normal"), TOKENS, INTEGER_INPUT)
    with pytest.raises(InputError, match="randint needs integer bounds"):
        InputRecipe("randint", low=0.5, high=3)
    path = tmp_path / "ids.npy"
    np.save(path, np.arange(10, dtype=np.int64).reshape(2, 5))
    loaded = load_input_file(path, TOKENS, 1 << 20, INTEGER_INPUT)["tokens"]
    assert loaded.dtype == np.int32
    np.testing.assert_array_equal(loaded, np.arange(10).reshape(2, 5))
    np.save(path, np.full((2, 5), 1.5, dtype=np.float32))
    with pytest.raises(InputError, match=r"the model's input is int32 \(token ids\) but"):
        load_input_file(path, TOKENS, 1 << 20, INTEGER_INPUT)
    np.save(path, np.full((2, 5), 2**40, dtype=np.int64))
    with pytest.raises(InputError, match="outside the int32 range"):
        load_input_file(path, TOKENS, 1 << 20, INTEGER_INPUT)
