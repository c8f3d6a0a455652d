"""What a user's port needs, read from stored runs and models: the weights in Keras's
layout, the inputs, and each layer's reference input (the isolated-mode feed)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import segno

from app.core.config import settings
from app.core.errors import Conflict, InvalidRequest, OutputsExpired
from app.data import divergences, storage
from app.data.orm import InputSet, Run, StoredModel
from workers.backends.c.program import PORT_VERSION
from workers.engine.results import layer_inputs_from
from workers.engine.status import BackendStatus, RunStatus
from workers.inspection import ModelInspector


def port_files(model: StoredModel, inspector: ModelInspector) -> Path:
    """The model's port folder (weights.npz, weights.json, tfjs/), written once by the
    model parser's child process: the API process never loads TensorFlow."""
    directory = storage.port_dir(model.sha256)
    if not (directory / "weights.json").exists():
        source = storage.model_path(model.sha256, model.file_format)
        with storage.staged_directory(directory) as staged:
            inspector.port_files(source, staged, settings.inspect_timeout_s)
    return directory


def c_port_file(model: StoredModel, inspector: ModelInspector, header: bool) -> Path:
    """The model's generated C port (or its header), written once by the model parser's
    child process; Unsupported names the first layer the port cannot generate."""
    directory = storage.c_port_dir(model.sha256, PORT_VERSION)
    if not (directory / "port.json").exists():
        source = storage.model_path(model.sha256, model.file_format)
        with storage.staged_directory(directory) as staged:
            made = inspector.c_port(source, staged, settings.inspect_timeout_s)
            (staged / "port.json").write_text(json.dumps(made))
    problem = json.loads((directory / "port.json").read_text())["unsupported"]
    if problem is not None:
        raise InvalidRequest(f"the C port cannot be generated: {problem}")
    return directory / ("port.h" if header else "port.c")


def weights_description(model: StoredModel, inspector: ModelInspector) -> dict[str, Any]:
    described: dict[str, Any] = json.loads(
        (port_files(model, inspector) / "weights.json").read_text()
    )
    return described


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def qr_svg(url: str) -> str:
    """The link as a QR code (inline SVG) for a phone's camera."""
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
    return buffer.getvalue().decode()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def input_arrays(input_set: InputSet) -> dict[str, np.ndarray]:
    return storage.load_inputs(input_set.sha256)


def feed_key(layer: str, index: int, count: int) -> str:
    """'<layer>' for a layer with one input, '<layer>:<i>' (its i-th input) otherwise."""
    return layer if count == 1 else f"{layer}:{index}"


def reference_feeds(run: Run, dtype: str) -> dict[str, np.ndarray]:
    """Each layer's inputs as the reference computed them: what isolated mode feeds every
    backend. Floats in `dtype` (a float32 backend gets exactly these values); integer
    inputs (token ids) stay integers."""
    if run.status != RunStatus.DONE:
        raise Conflict(f"run {run.id} is {run.status}; its feeds exist once it is done")
    reference = next(b for b in run.backend_runs if b.backend == run.reference)
    if reference.status != BackendStatus.DONE:
        raise Conflict(f"run {run.id}'s reference {run.reference} did not finish")
    if reference.outputs_path is None:
        raise OutputsExpired(
            run.id, run.reference, reference.outputs_expired_at, settings.output_retention_days
        )
    graph = divergences.stored_graph(run.model)
    input_set = next(s for s in run.model.input_sets if s.id == run.input_set_id)
    outputs = storage.load_outputs(storage.outputs_path(run.id, run.reference))["accumulated"]
    feeds = layer_inputs_from(graph, input_arrays(input_set), outputs)
    return {
        feed_key(layer, index, len(tensors)): (
            tensor.astype(dtype) if tensor.dtype.kind == "f" else tensor
        )
        for layer, tensors in feeds.items()
        for index, tensor in enumerate(tensors)
    }
