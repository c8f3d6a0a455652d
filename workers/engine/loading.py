"""Opening untrusted model files without executing anything in them.

Keras's own `safe_mode` only refuses Python lambdas, and only in `.keras` files.
We read the raw config first and refuse a `Lambda` layer or any object that is not
built into Keras (custom layers, registered functions) by name, so a hostile file
is turned away before Keras deserialises a single object. A `.keras` zip is
checked entry by entry before anything is unpacked (no `../` names, no bombs), and
the parameters the config declares are counted before Keras allocates them, so a
Dense layer with billions of units is refused by a limit instead of by the kernel.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.engine.errors import InvalidRequest
from workers.engine.graph import ModelGraph, graph_from_keras
from workers.engine.keras_env import import_keras
from workers.engine.options import DEFAULT_OPTIONS, EngineOptions

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_CONFIG_BYTES = 64 * 1024 * 1024
MAX_ZIP_ENTRIES = 10_000


class ModelRefused(InvalidRequest):
    """The file is not a model we will load; the message names the file or layer why."""


@dataclass(frozen=True)
class ModelArtifact:
    """A model file on disk with its parsed graph: what every runner receives."""

    path: Path
    sha256: str
    graph: ModelGraph


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detect_format(head: bytes) -> str | None:
    """'keras' for a zip, 'h5' for HDF5, from the first bytes; None for anything else."""
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head.startswith(HDF5_MAGIC):
        return "h5"
    return None


def model_format(path: Path) -> str:
    """'keras' or 'h5', from the file's magic bytes; the extension must agree."""
    with path.open("rb") as stream:
        kind = detect_format(stream.read(8))
    if kind is None:
        raise ModelRefused(f"{path.name}: not a Keras model (expected a .keras zip or an .h5 file)")
    if path.suffix.lower() != f".{kind}":
        raise ModelRefused(
            f"{path.name}: the content is a .{kind} file but the name ends in "
            f"{path.suffix or '(no extension)'!r}; rename it to .{kind}"
        )
    return kind


def check_zip_entries(path: Path, archive: zipfile.ZipFile, max_unpacked_bytes: int) -> None:
    """Refuse escaping names and bombs from the declared sizes alone.

    Python's zipfile never inflates an entry past its declared size, so bounding
    the declared sizes bounds what unpacking can cost.
    """
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise ModelRefused(
            f"{path.name}: the archive holds {len(entries)} entries, over the "
            f"limit of {MAX_ZIP_ENTRIES}"
        )
    for info in entries:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or ":" in name.split("/")[0]:
            raise ModelRefused(
                f"{path.name}: zip entry {info.filename!r} points outside the archive"
            )
    unpacked = sum(info.file_size for info in entries)
    if unpacked > max_unpacked_bytes:
        packed = sum(info.compress_size for info in entries)
        raise ModelRefused(
            f"{path.name}: the archive unpacks to {unpacked} bytes from {packed}, over "
            f"the {max_unpacked_bytes}-byte limit (DRIFTBENCH_MAX_UNPACKED_BYTES)"
        )


def read_model_config(path: Path, max_unpacked_bytes: int) -> dict[str, Any]:
    """The model's raw serialised config, read without deserialising any object."""
    kind = model_format(path)
    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as archive:
                check_zip_entries(path, archive, max_unpacked_bytes)
                info = archive.getinfo("config.json")
                if info.file_size > MAX_CONFIG_BYTES:
                    raise ModelRefused(
                        f"{path.name}: config.json declares {info.file_size} "
                        f"bytes, over the {MAX_CONFIG_BYTES}-byte limit"
                    )
                raw = archive.read(info)
        else:
            import h5py

            with h5py.File(path, "r") as h5:
                if "model_config" not in h5.attrs:
                    raise ModelRefused(
                        f"{path.name}: HDF5 file holds weights only "
                        "(no model_config); save the whole model"
                    )
                raw = h5.attrs["model_config"]
        config = json.loads(raw)
    except (
        zipfile.BadZipFile,
        KeyError,
        OSError,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as error:
        raise ModelRefused(f"{path.name}: unreadable {kind} model file ({error})") from error
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ModelRefused(f"{path.name}: model config has no 'config' entry")
    if not isinstance(config["config"].get("layers", []), list):
        raise ModelRefused(f"{path.name}: the model config's 'layers' is not a list")
    return config


def declared_parameter_count(path: Path, config: dict[str, Any], keras: Any) -> int:
    """Parameters the config would create, counted without allocating them.

    Inside a Keras StatelessScope that does not initialise on exit, building a
    layer records each variable's shape and defers its initializer; the deferred
    variables are then dropped from Keras's global list so nothing ever fills them.
    """
    from keras.src.backend.common import global_state
    from keras.src.legacy.saving import saving_options, saving_utils

    try:
        with keras.StatelessScope(initialize_variables=False):
            if model_format(path) == "h5":
                with saving_options.keras_option_scope(use_legacy_config=True):
                    model = saving_utils.model_from_config(config)
            else:
                model = keras.saving.deserialize_keras_object(config, safe_mode=True)
            return sum(math.prod(variable.shape) for variable in model.weights)
    except Exception as error:
        raise ModelRefused(f"{path.name}: the model config cannot be built ({error})") from error
    finally:
        global_state.set_global_attribute("uninitialized_variables", [])


def check_parameter_count(
    path: Path, config: dict[str, Any], keras: Any, max_model_params: int
) -> None:
    count = declared_parameter_count(path, config, keras)
    if count > max_model_params:
        raise ModelRefused(
            f"{path.name}: the model declares {count:,} parameters, over the limit of "
            f"{max_model_params:,} (DRIFTBENCH_MAX_MODEL_PARAMS); "
            "nothing was allocated"
        )


# Layers that `keras.applications` models are built with, outside `keras.layers`.
APPLICATION_LAYERS = frozenset({("keras.src.applications.convnext", "LayerScale")})
# The modules whose Operation classes a Functional graph may apply to tensors
# (`x + 3.0` is keras.src.ops.numpy's Add); each is imported by Keras itself anyway.
OPERATION_MODULES = frozenset(
    {"keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.math", "keras.src.ops.image"}
)
# From keras.src.ops.core, whose control-flow operations would carry functions, only these.
CORE_OPERATIONS = frozenset({("keras.src.ops.core", "Cast")})


def _builtin_layer_classes(keras: Any) -> frozenset[str]:
    return frozenset(
        name
        for name in dir(keras.layers)
        if isinstance(getattr(keras.layers, name), type)
        and issubclass(getattr(keras.layers, name), keras.layers.Layer)
    )


def _operation_problem(entry: dict[str, Any]) -> str | None:
    """Why a serialised node naming a module under keras.src.ops is not a built-in
    operation, or None when it is one (an Operation class of an allowed module)."""
    module = entry.get("module")
    class_name = entry.get("class_name", "?")
    if (module, class_name) in CORE_OPERATIONS:
        return None
    if module not in OPERATION_MODULES:
        return f"module {module!r} is not one of Keras's operation modules"
    candidate = getattr(importlib.import_module(module), str(class_name), None)
    operation = importlib.import_module("keras.src.ops.operation").Operation
    if not (isinstance(candidate, type) and issubclass(candidate, operation)):
        return f"{module} has no operation {class_name!r}"
    return None


def _foreign_object(value: Any) -> str | None:
    """The first object inside a layer config that is not part of Keras itself."""
    if isinstance(value, dict):
        class_name = value.get("class_name")
        module = value.get("module")
        registered = value.get("registered_name")
        if class_name == "__lambda__":
            return "a serialised Python lambda"
        if isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
            return f"{class_name} from module {module!r}"
        if isinstance(registered, str) and registered != class_name:
            return f"custom object {registered!r}"
        for item in value.values():
            found = _foreign_object(item)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _foreign_object(item)
            if found:
                return found
    return None


def check_model_config(config: dict[str, Any], keras: Any = None) -> None:
    """Refuse Lambda layers and custom objects, naming the layer; never executes them."""
    keras = keras or import_keras()
    builtin = _builtin_layer_classes(keras)
    pending = [config]
    while pending:
        model_entry = pending.pop()
        for layer in model_entry.get("config", {}).get("layers", []):
            class_name = layer.get("class_name", "?")
            name = layer.get("config", {}).get("name") or layer.get("name") or "?"
            if class_name == "Lambda":
                raise ModelRefused(
                    f"layer {name!r} is a Lambda layer: its Python code would have "
                    "to be executed, which driftbench never does"
                )
            if class_name in {"Functional", "Sequential", "Model"}:
                pending.append(layer)
                continue
            if str(layer.get("module", "")).startswith("keras.src.ops"):
                problem = _operation_problem(layer)
                if problem:
                    raise ModelRefused(f"operation node {name!r} ({class_name}): {problem}")
            elif class_name not in builtin and (layer.get("module"), class_name) not in (
                APPLICATION_LAYERS
            ):
                raise ModelRefused(
                    f"layer {name!r} has class {class_name!r}, which is not a "
                    "built-in Keras layer (custom objects are never loaded)"
                )
            foreign = _foreign_object(layer.get("config", {}))
            if foreign:
                raise ModelRefused(
                    f"layer {name!r} ({class_name}) refers to {foreign}, which is "
                    "not part of Keras (custom objects are never loaded)"
                )


def load_keras_model(
    path: Path, keras: Any = None, options: EngineOptions = DEFAULT_OPTIONS
) -> Any:
    """Load a `.keras` or `.h5` model after the safety check, with Keras's safe mode on.

    `keras` is the module to load with; the keras-gpu child passes its own, imported
    with another Keras backend, and the default is this process's TensorFlow Keras.
    """
    keras = keras or import_keras(options.onednn)
    config = read_model_config(path, options.max_unpacked_bytes)
    check_model_config(config, keras)
    check_parameter_count(path, config, keras, options.max_model_params)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise ModelRefused(f"{path.name}: Keras could not load the model ({error})") from error


def load_artifact(path: Path, options: EngineOptions = DEFAULT_OPTIONS) -> ModelArtifact:
    path = Path(path)
    if not path.is_file():
        raise ModelRefused(f"{path}: no such model file")
    model = load_keras_model(path, options=options)
    try:
        graph = graph_from_keras(model)
    except InvalidRequest:
        raise
    except Exception as error:  # a Keras structure the unroll does not know: one line, 422
        raise ModelRefused(
            f"{path.name}: the model cannot be described node by node "
            f"({type(error).__name__}: {error})"
        ) from error
    return ModelArtifact(path=path, sha256=sha256_of(path), graph=graph)
