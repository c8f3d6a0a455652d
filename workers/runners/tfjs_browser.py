"""`tfjs-cpu`, `tfjs-wasm`, `tfjs-webgl`, `tfjs-webgl-f16`: TF.js 4.22 in headless Chromium.

The model is exported by our own exporter and served, with the harness page,
from a local HTTP server; the process's one warm Chromium keeps one page per
backend, where TF.js stays initialised (and WebGL's shaders compiled) between jobs;
each job loads its model afresh and disposes of it afterwards. TF.js's cpu
backend is plain JavaScript arithmetic in float32; webgl runs shaders through
SwiftShader here, and with WEBGL_FORCE_F16_TEXTURES it stores every tensor as
float16, like phones whose GPUs only render half floats.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from playwright.async_api import Page

from app.config import settings
from workers.browser_host import (
    INSTALL_HINT,
    BrowserHost,
    BrowserJobFailed,
    BrowserUnavailable,
    shared_host,
)
from workers.harness_server import STATIC_FILES, HarnessServer
from workers.model_graph import LayerSpec
from workers.model_loading import ModelArtifact
from workers.runners.base import (
    BackendFailed,
    BackendUnavailable,
    LayerInputs,
    LayerOutputs,
    Runner,
)
from workers.tfjs_export import export_model, unsupported_reason

TFJS_BUNDLE = STATIC_FILES["/tfjs/tf.min.js"]
_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()
# Weights read back from TF.js, per (model sha256, backend): the same export loads the
# same way every time, so the page checks it on a backend's first job of a model only.
_weights_checked: dict[tuple[str, str], dict[str, Any]] = {}


def _server_and_exports() -> tuple[HarnessServer, Path]:
    with _shared_lock:
        if "server" not in _shared:
            _shared["server"] = HarnessServer()
            _shared["exports"] = Path(tempfile.mkdtemp(prefix="driftbench-tfjs-"))
            atexit.register(shutil.rmtree, _shared["exports"], ignore_errors=True)
        return _shared["server"], _shared["exports"]


class TfjsRunner(Runner):
    QUEUE: ClassVar[str] = "browser"
    TFJS_BACKEND: ClassVar[str]
    FLAGS: ClassVar[dict[str, bool]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[str, Any] = {}

    @classmethod
    def availability(cls) -> str | None:
        if not settings.chromium_path.exists():
            return f"Chromium not found at {settings.chromium_path}; {INSTALL_HINT}"
        if not TFJS_BUNDLE.exists():
            return f"TF.js is not installed in {TFJS_BUNDLE.parents[3]}; run `make install`"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        package = TFJS_BUNDLE.parents[1] / "package.json"
        return {"tfjs": json.loads(package.read_text())["version"]} if package.exists() else {}

    def activate_impl(self) -> None:
        try:
            self.host: BrowserHost = shared_host(settings.chromium_path)
        except BrowserUnavailable as error:
            raise BackendUnavailable(str(error)) from error
        self._server, self._exports = _server_and_exports()

    def layer_unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_reason(layer)

    def model_url(self, model: ModelArtifact) -> str:
        """Where the page loads the model's TF.js export from (exported once per sha256)."""
        directory = self._exports / model.sha256
        if not (directory / "model.json").exists():
            export_model(model.graph, directory)
        return self._server.add_model(model.sha256, directory)

    def _job(
        self, model: ModelArtifact, mode: str, tensors: list[np.ndarray], spec_extra: dict[str, Any]
    ) -> LayerOutputs:
        names = [layer.name for layer in model.graph.compute_layers]
        checked = _weights_checked.get((model.sha256, self.BACKEND))
        job_id = self._server.open_job([np.ascontiguousarray(t, "<f4").tobytes() for t in tensors])
        spec = {
            "backend": self.TFJS_BACKEND,
            "flags": self.FLAGS,
            "modelUrl": self.model_url(model),
            "jobUrl": f"{self._server.url}/jobs/{job_id}",
            "mode": mode,
            "layers": names,
            "batchSize": settings.tfjs_batch_size,
            "checkWeights": checked is None,
            **spec_extra,
        }

        async def in_page(page: Page, served: int) -> dict[str, Any]:
            result = await page.evaluate("spec => window.driftbench.runJob(spec)", spec)
            return {**result, "page_job": served}

        try:
            result = self.host.run_in_page(
                self.BACKEND,
                f"{self._server.url}/harness.html",
                in_page,
                timeout_s=settings.browser_job_timeout_s,
            )
        except BrowserJobFailed as error:
            raise BackendFailed(f"{self.BACKEND}: {error}") from error
        finally:
            channel = self._server.close_job(job_id)
        if checked is None:
            checked = _weights_checked[(model.sha256, self.BACKEND)] = result["environment"][
                "weights_roundtrip"
            ]
        self._environment = {
            **result["environment"],
            "weights_roundtrip": checked,
            "browser_restarts": self.host.restarts,
            "page_job": result["page_job"],
            "chromium": str(settings.chromium_path),
        }
        return {
            name: np.frombuffer(channel.outputs[i], dtype="<f4").reshape(result["shapes"][i])
            for i, name in enumerate(names)
        }

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        order = [layer.name for layer in model.graph.inputs]
        specs = [{"index": i, "shape": list(inputs[name].shape)} for i, name in enumerate(order)]
        return self._job(model, "accumulated", [inputs[name] for name in order], {"inputs": specs})

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        tensors: list[np.ndarray] = []
        per_layer = []
        for layer in model.graph.compute_layers:
            specs = []
            for array in layer_inputs[layer.name]:
                specs.append({"index": len(tensors), "shape": list(array.shape)})
                tensors.append(array)
            per_layer.append(specs)
        return self._job(model, "isolated", tensors, {"isolatedInputs": per_layer})

    def environment(self) -> dict[str, Any]:
        return self._environment


class TfjsCpuRunner(TfjsRunner):
    BACKEND: ClassVar[str] = "tfjs-cpu"
    TFJS_BACKEND: ClassVar[str] = "cpu"


class TfjsWasmRunner(TfjsRunner):
    BACKEND: ClassVar[str] = "tfjs-wasm"
    TFJS_BACKEND: ClassVar[str] = "wasm"


class TfjsWebglRunner(TfjsRunner):
    BACKEND: ClassVar[str] = "tfjs-webgl"
    TFJS_BACKEND: ClassVar[str] = "webgl"
    FLAGS: ClassVar[dict[str, bool]] = {"WEBGL_FORCE_F16_TEXTURES": False}


class TfjsWebglF16Runner(TfjsRunner):
    BACKEND: ClassVar[str] = "tfjs-webgl-f16"
    TFJS_BACKEND: ClassVar[str] = "webgl"
    FLAGS: ClassVar[dict[str, bool]] = {"WEBGL_FORCE_F16_TEXTURES": True}
