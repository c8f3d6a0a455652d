"""Parsing an uploaded model in a separate process, under a time limit.

A malformed or hostile file may hang or crash the Keras/h5py parser; doing it in a
child process keeps the server alive, and a time limit keeps it responsive. The
child stays warm between uploads (TensorFlow imports once) and is replaced when it
times out or dies. Files are parsed one at a time; requests uploading the same
bytes at once share one parse instead of queueing for their own.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from workers.backends.registry import REGISTRY
from workers.diagnosis.runs import diagnose_files
from workers.engine.errors import InvalidRequest
from workers.engine.graph import architecture_signature
from workers.engine.loading import load_artifact
from workers.engine.options import DEFAULT_OPTIONS, EngineOptions
from workers.engine.weights import model_weights
from workers.processes.lifetime import die_with_parent


class InspectionFailed(InvalidRequest):
    """The file could not be parsed as a model; the message says why."""


def summarize_model(path: str, options: EngineOptions) -> dict[str, Any]:
    """Runs in the child: layers, architecture and which backends can run the model."""
    try:
        artifact = load_artifact(Path(path), options)
    except InvalidRequest as error:
        return {"error": str(error)}
    graph = artifact.graph
    architecture, label = architecture_signature(graph)
    depth = 0
    layers = []
    for layer in graph.layers:
        depth += 0 if layer.is_input else 1
        layers.append(
            {
                "name": layer.name,
                "class_name": layer.class_name,
                "output_shape": list(layer.output_shape),
                "params": layer.param_count,
                "depth": 0 if layer.is_input else depth,
                "inbound": layer.inbound,
                **({"dtype": layer.config["dtype"]} if layer.is_input else {}),
            }
        )
    support = {
        backend: entry.runner_class()(options).unsupported_reason(graph)
        for backend, entry in REGISTRY.items()
    }
    return {
        "name": graph.name,
        "layers": layers,
        "architecture": architecture,
        "architecture_label": label,
        "backend_support": support,
    }


def write_port_files(path: str, options: EngineOptions, directory: str) -> dict[str, Any]:
    """Runs in the child: the weights as `weights.npz` (Keras layout, '<layer>/<weight>')
    and `weights.json` (each one's shape and layout, and which node is which layer of the
    TF.js export), and the TF.js export the probe page loads under `tfjs/`, or the
    reason TF.js cannot run the model."""
    from workers.backends.tfjs.export import (
        export_model,
        export_problem,
        tfjs_computed,
        tfjs_names,
    )

    try:
        artifact = load_artifact(Path(path), options)
    except InvalidRequest as error:
        return {"error": str(error)}
    target = Path(directory)
    weights = model_weights(artifact.graph)
    with (target / "weights.npz").open("wb") as stream:
        np.savez(stream, **{weight.key: weight.value for weight in weights})
    graph = artifact.graph
    problem = export_problem(graph)
    names = tfjs_names(graph)
    if problem is None:
        export_model(graph, target / "tfjs")
    described = {
        "weights": [weight.describe() for weight in weights],
        "tfjs": {
            "unsupported": problem,
            "layers": []
            if problem
            else [
                {"node": layer.name, "tfjs": names[layer.name]} for layer in tfjs_computed(graph)
            ],
            "inputs": [{"node": layer.name, "tfjs": names[layer.name]} for layer in graph.inputs],
        },
    }
    (target / "weights.json").write_text(json.dumps(described))
    return described


def write_c_port(path: str, options: EngineOptions, directory: str) -> dict[str, Any]:
    """Runs in the child: the model's C port as `port.c` and `port.h`, or the reason the
    port cannot be generated."""
    from workers.backends.c.layers import PortUnsupported
    from workers.backends.c.program import generate

    try:
        artifact = load_artifact(Path(path), options)
    except InvalidRequest as error:
        return {"error": str(error)}
    try:
        port = generate(artifact.graph)
    except PortUnsupported as error:
        return {"unsupported": str(error)}
    (Path(directory) / "port.c").write_text(port.source)
    (Path(directory) / "port.h").write_text(port.header)
    return {"unsupported": None}


class ModelInspector:
    def __init__(self, options: EngineOptions = DEFAULT_OPTIONS) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._in_flight: dict[str, Future[dict[str, Any]]] = {}
        self._in_flight_lock = threading.Lock()
        self.parses = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _discard(self) -> None:
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
            # Waited for (its process is killed: at once): the pool's manager thread closes
            # its wakeup pipe as it ends, and one still ending at the interpreter's exit
            # raced Python 3.11's exit hook, which writes to that pipe ("OSError: [Errno 9]
            # Bad file descriptor" as `make demo` exited).
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def inspect(self, path: Path, timeout_s: float, key: str) -> dict[str, Any]:
        """The model's summary; callers with the same `key` (the file's sha256) at the same
        time get the result of one parse."""
        with self._in_flight_lock:
            shared = self._in_flight.get(key)
            owner = shared is None
            if shared is None:
                shared = self._in_flight[key] = Future()
        if not owner:
            return shared.result()
        try:
            summary = self._parse(path, timeout_s)
        except BaseException as error:
            shared.set_exception(error)
            raise
        else:
            shared.set_result(summary)
            return summary
        finally:
            with self._in_flight_lock:
                del self._in_flight[key]

    def _parse(self, path: Path, timeout_s: float) -> dict[str, Any]:
        return self._in_child(summarize_model, path, timeout_s)

    def port_files(self, path: Path, directory: Path, timeout_s: float) -> dict[str, Any]:
        """Write what a port needs into `directory` (see `write_port_files`)."""
        return self._in_child(write_port_files, path, timeout_s, str(directory))

    def c_port(self, path: Path, directory: Path, timeout_s: float) -> dict[str, Any]:
        """Write the model's C port into `directory` (see `write_c_port`)."""
        return self._in_child(write_c_port, path, timeout_s, str(directory))

    def diagnose(
        self, path: Path, candidate: Path, fed: Path, modes: list[str], timeout_s: float
    ) -> dict[str, Any]:
        """An external port's outputs diagnosed in the child (see `diagnose_files`)."""
        return self._in_child(
            diagnose_files, path, timeout_s, str(candidate), str(fed), json.dumps(modes)
        )

    def _in_child(
        self, function: Callable[..., dict[str, Any]], path: Path, timeout_s: float, *args: str
    ) -> dict[str, Any]:
        with self._lock:
            self.parses += 1
            future = self._executor().submit(function, str(path), self.options, *args)
            try:
                summary = future.result(timeout=timeout_s)
            except FutureTimeout:
                self._discard()
                raise InspectionFailed(
                    f"parsing the model file took longer than the {timeout_s:.0f} s limit"
                ) from None
            except BrokenProcessPool:
                self._discard()
                raise InspectionFailed("the model parser crashed on this file") from None
        if "error" in summary:
            raise InspectionFailed(summary["error"])
        return summary

    def close(self) -> None:
        with self._lock:
            self._discard()
