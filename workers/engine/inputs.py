"""Model inputs: loaded from `.npy`/`.npz` files or generated from a seeded recipe.

Float inputs are float32 because that is what every deployed backend is fed; NaN and
Inf are allowed on purpose, since how a backend propagates them is part of its drift.
An input the model declares as integer (token ids for an Embedding) is generated
and kept as int32, never passed through float.
An uploaded file's `.npy` headers are read and judged before numpy loads any data:
numpy would otherwise allocate whatever size a hostile header declares.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from workers.engine.errors import InvalidRequest

GeneratorKind = Literal["ones", "uniform", "normal", "randint"]
GENERATOR_KINDS: tuple[str, ...] = ("ones", "uniform", "normal", "randint")
InputShapes = dict[str, tuple[int | None, ...]]
InputDtypes = dict[str, str]
INTEGER_DTYPE = np.int32


def takes_integers(dtype: str) -> bool:
    return np.dtype(dtype).kind in "iu"


class InputError(InvalidRequest):
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
        if self.kind in ("uniform", "randint") and not self.low < self.high:
            raise InputError(f"{self.kind} needs low < high, got low={self.low} high={self.high}")
        if self.kind == "randint" and not (
            float(self.low).is_integer() and float(self.high).is_integer()
        ):
            raise InputError(f"randint needs integer bounds, got low={self.low} high={self.high}")
        info = np.iinfo(INTEGER_DTYPE)
        if self.kind == "randint" and not info.min <= self.low < self.high <= info.max + 1:
            raise InputError(
                f"randint bounds [{self.low}, {self.high}) are outside the int32 range"
            )
        if self.kind == "normal" and self.std < 0:
            raise InputError(f"normal needs std >= 0, got {self.std}")


def _concrete_shape(graph_shape: tuple[int | None, ...], batch: int, name: str) -> tuple[int, ...]:
    if any(dim is None for dim in graph_shape[1:]):
        raise InputError(
            f"input {name!r} has shape {graph_shape} with unknown dimensions; "
            "upload a .npy instead of generating inputs"
        )
    return (batch, *(int(dim) for dim in graph_shape[1:]))


def generate_inputs(
    recipe: InputRecipe, input_shapes: InputShapes, input_dtypes: InputDtypes | None = None
) -> dict[str, np.ndarray]:
    """One array per model input (shapes and dtypes as `ModelGraph` gives them)."""
    rng = np.random.default_rng(recipe.seed)
    inputs: dict[str, np.ndarray] = {}
    for name, model_shape in input_shapes.items():
        shape = _concrete_shape(model_shape, recipe.batch, name)
        integers = takes_integers((input_dtypes or {}).get(name, "float32"))
        if integers and recipe.kind not in ("ones", "randint"):
            raise InputError(
                f"input {name!r} takes integers (token ids): generate them with randint, "
                "low 0 and high the vocabulary size"
            )
        if recipe.kind == "ones":
            values = np.ones(shape)
        elif recipe.kind == "uniform":
            values = rng.uniform(recipe.low, recipe.high, size=shape)
        elif recipe.kind == "randint":
            values = rng.integers(int(recipe.low), int(recipe.high), size=shape)
        else:
            values = rng.normal(recipe.mean, recipe.std, size=shape)
        inputs[name] = values.astype(INTEGER_DTYPE if integers else np.float32)
    return inputs


def _as_model_dtype(array: np.ndarray, label: str, dtype: str) -> np.ndarray:
    """float32 for a float input; int32 for an integer one, which takes integers only."""
    if array.dtype.kind not in "fiub":
        raise InputError(f"{label}: dtype {array.dtype} is not numeric")
    if not takes_integers(dtype):
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind not in "iub":
        raise InputError(
            f"{label}: the model's input is {dtype} (token ids) but the array holds "
            f"{array.dtype}; save it as an integer array"
        )
    info = np.iinfo(INTEGER_DTYPE)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise InputError(f"{label}: values outside the int32 range")
    return np.ascontiguousarray(array, dtype=INTEGER_DTYPE)


def npy_header(stream: IO[bytes], label: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype from an `.npy` header, leaving `stream` at the first data byte."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise InputError(f"{label}: .npy format version {version} is not supported")
    except ValueError as error:
        raise InputError(f"{label}: not a readable .npy header ({error})") from error
    return shape, dtype


def _declared_npy_bytes(stream: IO[bytes], stored_bytes: int, label: str) -> int:
    """The data size an `.npy` header declares, checked against the bytes really stored."""
    shape, dtype = npy_header(stream, label)
    if dtype.kind not in "fiub":
        raise InputError(
            f"{label}: dtype {dtype} is not numeric (object arrays are never unpickled)"
        )
    declared = math.prod(shape) * dtype.itemsize
    held = stored_bytes - stream.tell()
    if declared != held:
        raise InputError(
            f"{label}: the header declares shape {shape} of {dtype} ({declared} bytes) "
            f"but the file holds {held} bytes of data"
        )
    return declared


def check_input_file(path: Path, max_bytes: int) -> None:
    """Refuse lying or oversized `.npy`/`.npz` headers before any array is allocated."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                total = 0
                for info in archive.infolist():
                    with archive.open(info) as member:
                        label = f"{path.name}[{info.filename}]"
                        total += _declared_npy_bytes(member, info.file_size, label)
        else:
            with path.open("rb") as stream:
                total = _declared_npy_bytes(stream, path.stat().st_size, path.name)
    except (OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{path.name}: not a readable .npy/.npz ({error})") from error
    if total > max_bytes:
        raise InputError(
            f"{path.name}: the arrays declare {total} bytes, over the "
            f"{max_bytes}-byte limit (DRIFTBENCH_MAX_INPUT_BYTES)"
        )


def check_generated_size(batch: int, input_shapes: InputShapes, max_bytes: int) -> None:
    """Refuse a generator spec whose float32 arrays would be over the input limit."""
    total = sum(
        4 * batch * math.prod(_concrete_shape(shape, 1, name)[1:])
        for name, shape in input_shapes.items()
    )
    if total > max_bytes:
        raise InputError(
            f"batch {batch} makes {total} bytes of float32 inputs, over the "
            f"{max_bytes}-byte limit (DRIFTBENCH_MAX_INPUT_BYTES)"
        )


def load_input_file(
    path: Path, input_shapes: InputShapes, max_bytes: int, input_dtypes: InputDtypes | None = None
) -> dict[str, np.ndarray]:
    """A `.npy` for a one-input model, or an `.npz` keyed by input layer name."""
    path = Path(path)
    names = list(input_shapes)
    dtypes = {name: (input_dtypes or {}).get(name, "float32") for name in names}
    check_input_file(path, max_bytes)
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
        inputs = {names[0]: _as_model_dtype(loaded, path.name, dtypes[names[0]])}
    else:
        with loaded:
            missing = sorted(set(names) - set(loaded.files))
            if missing:
                raise InputError(
                    f"{path.name}: no array for input(s) {missing}; "
                    f"the file holds {sorted(loaded.files)}"
                )
            inputs = {
                name: _as_model_dtype(loaded[name], f"{path.name}[{name}]", dtypes[name])
                for name in names
            }
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
