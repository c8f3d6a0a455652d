"""Model inputs: loaded from `.npy`/`.npz` files or generated from a seeded recipe.

Inputs are float32 because that is what every deployed backend is fed; NaN and Inf
are allowed on purpose, since how a backend propagates them is part of its drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

GeneratorKind = Literal["ones", "uniform", "normal"]
GENERATOR_KINDS: tuple[str, ...] = ("ones", "uniform", "normal")
InputShapes = dict[str, tuple[int | None, ...]]


class InputError(ValueError):
    """Inputs that cannot be fed to the model; the message names both shapes."""


@dataclass(frozen=True)
class InputRecipe:
    """How to generate an input set: kind, batch size, seed and the kind's parameters."""

    kind: GeneratorKind
    batch: int = 1
    seed: int = 0
    low: float = -1.0
    high: float = 1.0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in GENERATOR_KINDS:
            raise InputError(f"unknown generator {self.kind!r}; use one of {GENERATOR_KINDS}")
        if self.batch < 1:
            raise InputError(f"batch must be at least 1, got {self.batch}")
        if self.kind == "uniform" and not self.low < self.high:
            raise InputError(f"uniform needs low < high, got low={self.low} high={self.high}")
        if self.kind == "normal" and self.std < 0:
            raise InputError(f"normal needs std >= 0, got {self.std}")


def _concrete_shape(graph_shape: tuple[int | None, ...], batch: int, name: str) -> tuple[int, ...]:
    if any(dim is None for dim in graph_shape[1:]):
        raise InputError(
            f"input {name!r} has shape {graph_shape} with unknown dimensions; "
            "upload a .npy instead of generating inputs"
        )
    return (batch, *(int(dim) for dim in graph_shape[1:]))


def generate_inputs(recipe: InputRecipe, input_shapes: InputShapes) -> dict[str, np.ndarray]:
    """One array per model input (shapes as `ModelGraph.input_shapes` gives them)."""
    rng = np.random.default_rng(recipe.seed)
    inputs: dict[str, np.ndarray] = {}
    for name, model_shape in input_shapes.items():
        shape = _concrete_shape(model_shape, recipe.batch, name)
        if recipe.kind == "ones":
            values = np.ones(shape)
        elif recipe.kind == "uniform":
            values = rng.uniform(recipe.low, recipe.high, size=shape)
        else:
            values = rng.normal(recipe.mean, recipe.std, size=shape)
        inputs[name] = values.astype(np.float32)
    return inputs


def _as_float32(array: np.ndarray, label: str) -> np.ndarray:
    if array.dtype.kind not in "fiub":
        raise InputError(f"{label}: dtype {array.dtype} is not numeric")
    return np.ascontiguousarray(array, dtype=np.float32)


def load_input_file(path: Path, input_shapes: InputShapes) -> dict[str, np.ndarray]:
    """A `.npy` for a one-input model, or an `.npz` keyed by input layer name."""
    path = Path(path)
    names = list(input_shapes)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(
            f"{path.name}: not a readable .npy/.npz without pickles ({error})"
        ) from error
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise InputError(
                f"{path.name}: the model has {len(names)} inputs {names}; "
                "give an .npz with one array per input name"
            )
        inputs = {names[0]: _as_float32(loaded, path.name)}
    else:
        with loaded:
            missing = sorted(set(names) - set(loaded.files))
            if missing:
                raise InputError(
                    f"{path.name}: no array for input(s) {missing}; "
                    f"the file holds {sorted(loaded.files)}"
                )
            inputs = {name: _as_float32(loaded[name], f"{path.name}[{name}]") for name in names}
    check_input_shapes(inputs, input_shapes)
    return inputs


def check_input_shapes(inputs: dict[str, np.ndarray], input_shapes: InputShapes) -> None:
    for name, expected in input_shapes.items():
        array = inputs.get(name)
        if array is None:
            raise InputError(f"no array given for model input {name!r}")
        fits = array.ndim == len(expected) and all(
            want is None or want == got
            for want, got in zip(expected[1:], array.shape[1:], strict=True)
        )
        if not fits or array.shape[0] < 1:
            model_shape = "(batch, " + ", ".join(str(d) for d in expected[1:]) + ")"
            raise InputError(
                f"input {name!r}: array shape {array.shape} does not fit the "
                f"model's input shape {model_shape}"
            )
