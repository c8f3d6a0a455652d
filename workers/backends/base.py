"""The one runner interface: the base class checks, each backend fills `*_impl` hooks.

A runner is a context manager: expensive set-up (importing TensorFlow, launching
a browser) happens in `activate`, so it is paid once per process, not per job (a
`RunnerPool` holds the active runners). Runners take the engine's options as an
argument and never read the service's settings.
`run` validates the model and inputs, then returns every layer's output keyed by
layer name, cast to the backend's output dtype (float64 only for the reference).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, ClassVar, TypeVar

import numpy as np

from workers.engine.graph import LayerSpec, ModelGraph
from workers.engine.inputs import check_input_shapes
from workers.engine.loading import ModelArtifact
from workers.engine.options import DEFAULT_OPTIONS, EngineOptions
from workers.engine.results import LayerInputs, LayerOutputs

T = TypeVar("T")


@functools.cache
def package_version(name: str) -> str:
    """An installed distribution's version, read once per process: reading it walks
    sys.path (0.4 ms, three times a backend listing: 3.4 ms of each `POST /api/runs`),
    and a process runs the code it imported whatever is installed later."""
    return metadata.version(name)


class BackendUnsupported(Exception):
    """The backend cannot run this model; the message is 'unsupported: <layer> (<class>)'."""


class BackendUnavailable(Exception):
    """The backend cannot run on this machine at all (no GPU, no browser)."""


class BackendFailed(Exception):
    """The backend started but did not produce outputs; the message says why."""


def unsupported_label(layer: LayerSpec) -> str:
    """How every backend starts the reason it cannot run a layer."""
    return f"unsupported: {layer.name} ({layer.class_name})"


def split_values(values: np.ndarray, shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Views of one flat array as arrays of these shapes, in order: how every out-of-process
    backend hands its outputs back (the TF.js page, the compiled C port, the Keras child),
    one transfer rather than one per layer. ValueError when the sizes do not add up."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if sum(sizes) != values.size:
        raise ValueError(f"{values.size} output values received, {sum(sizes)} expected")
    ends = np.cumsum(sizes)
    return [
        values[end - size : end].reshape(shape)
        for end, size, shape in zip(ends, sizes, shapes, strict=True)
    ]


class SharedResources:
    """What several runners of one process share (the TF.js backends' one browser),
    made by the first runner that needs it and closed with its pool."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._closing = contextlib.ExitStack()
        self._lock = threading.Lock()

    def get(self, key: str, create: Callable[[], T], close: Callable[[T], None]) -> T:
        with self._lock:
            if key not in self._items:
                item = create()
                self._closing.callback(close, item)
                self._items[key] = item
            return self._items[key]  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self._closing.close()


class Runner(ABC):
    BACKEND: ClassVar[str]
    OUTPUT_DTYPE: ClassVar[type[np.floating[Any]]] = np.float32

    def __init__(
        self, options: EngineOptions = DEFAULT_OPTIONS, shared: SharedResources | None = None
    ) -> None:
        """Without `shared` (a runner used on its own) the runner keeps what it would
        share to itself and releases it on deactivation."""
        self.options = options
        self.active = False
        self._owns_shared = shared is None
        self.shared = SharedResources() if shared is None else shared

    @classmethod
    def availability(cls, options: EngineOptions) -> str | None:
        """Why this machine cannot run the backend at all, or None when it can."""
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of what the backend runs on, read without importing it."""
        return {}

    @classmethod
    def status(cls, options: EngineOptions) -> dict[str, Any]:
        """What /api/backends and the worker heartbeat report for this machine."""
        reason = cls.availability(options)
        return {"available": reason is None, "reason": reason, "versions": cls.versions()}

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.active:
            self.activate_impl()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
            self.active = False
        if self._owns_shared:
            self.shared.close()

    def unsupported_reason(self, graph: ModelGraph) -> str | None:
        """'unsupported: <layer> (<class>)' for the first layer this backend lacks, or None."""
        for layer in self.computed_layers(graph):
            reason = self.layer_unsupported(layer)
            if reason is not None:
                return reason
        return None

    def run(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        """The model end to end: every layer's output from one forward pass (accumulated)."""
        self._check(model)
        check_input_shapes(inputs, model.graph.input_shapes)
        outputs = self.run_impl(model, {k: self._own_dtype(v) for k, v in inputs.items()})
        return self._collect(model.graph, outputs)

    def run_isolated(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        """Each layer fed the reference's inputs to that layer: the layer's own error only."""
        self._check(model)
        cast = {name: [self._own_dtype(x) for x in xs] for name, xs in layer_inputs.items()}
        return self._collect(model.graph, self.run_isolated_impl(model, cast))

    def _own_dtype(self, array: np.ndarray) -> np.ndarray:
        """Floats in the backend's precision; integers (token ids) stay integers."""
        return array.astype(self.OUTPUT_DTYPE) if array.dtype.kind == "f" else array

    def _check(self, model: ModelArtifact) -> None:
        if not self.active:
            raise RuntimeError(f"{self.BACKEND}: runner used outside its `with` block")
        reason = self.unsupported_reason(model.graph)
        if reason is not None:
            raise BackendUnsupported(reason)

    def _collect(self, graph: ModelGraph, outputs: LayerOutputs) -> LayerOutputs:
        collected = {}
        for layer in self.computed_layers(graph):
            if layer.name not in outputs:
                raise BackendFailed(f"{self.BACKEND} returned no output for layer {layer.name!r}")
            collected[layer.name] = np.asarray(outputs[layer.name], dtype=self.OUTPUT_DTYPE)
        return collected

    def activate_impl(self) -> None:
        """Acquire what the backend needs (imports, processes); default: nothing."""

    def deactivate_impl(self) -> None:
        """Release what `activate_impl` acquired; default: nothing."""

    def layer_unsupported(self, layer: LayerSpec) -> str | None:
        """Why this backend cannot run one layer, or None; default: it can run anything."""
        return None

    def computed_layers(self, graph: ModelGraph) -> list[LayerSpec]:
        """The layers this backend outputs; default: all. One that computes some nodes
        inside others (TF.js's masks) leaves those out: they are compared as not provided."""
        return graph.compute_layers

    @abstractmethod
    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs: ...

    @abstractmethod
    def run_isolated_impl(
        self, model: ModelArtifact, layer_inputs: LayerInputs
    ) -> LayerOutputs: ...

    @abstractmethod
    def environment(self) -> dict[str, Any]:
        """Versions and numeric settings that explain this backend's numbers."""
