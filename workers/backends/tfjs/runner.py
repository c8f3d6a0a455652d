"""`tfjs-cpu`, `tfjs-wasm`, `tfjs-webgl`, `tfjs-webgl-f16`: TF.js 4.22 in headless Chromium.

The model is exported by our own exporter and served, with the harness page,
from a local HTTP server. The four TF.js runners of a process share one
`TfjsSession` (one warm Chromium, the harness server, the exported models), held by
their pool; the browser keeps one page per backend, where TF.js stays initialised
(and WebGL's shaders compiled) between jobs; each job loads its model afresh and
disposes of it afterwards. TF.js's cpu
backend is plain JavaScript arithmetic in float32; webgl runs shaders through
SwiftShader here, and with WEBGL_FORCE_F16_TEXTURES it stores every tensor as
float16, like phones whose GPUs only render half floats.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workers.backends.base import (
    BackendFailed,
    BackendUnavailable,
    BackendUnsupported,
    LayerInputs,
    LayerOutputs,
    Runner,
    SharedResources,
)
from workers.backends.tfjs.export import (
    export_model,
    export_problem,
    isolated_steps,
    tfjs_computed,
    tfjs_names,
)
from workers.backends.tfjs.harness_server import STATIC_FILES, HarnessServer, OutputsNotReceived
from workers.engine.graph import LayerSpec, ModelGraph
from workers.engine.loading import ModelArtifact
from workers.engine.options import DEFAULT_OPTIONS, EngineOptions

if TYPE_CHECKING:
    from playwright.async_api import Page

    from workers.backends.tfjs.browser_host import BrowserHost

TFJS_BUNDLE = STATIC_FILES["/tfjs/tf.min.js"]
EXACT_IN_F4 = 2**24  # the first integer float32 cannot hold exactly: inputs travel as <f4
# Inputs up to this size travel inline in the job's spec (base64): cheaper than the page's
# own request for them (about 2 ms in the page), which larger inputs still make. Measured
# from Python, inline / fetched: 51 KB 2.3 / 3.1 ms, 64 KB 2.9 / 3.3 ms, 100 KB 4.5 / 4.2 ms.
INLINE_INPUT_BYTES = 64 << 10
# Input sets a page keeps (harness.js's KEPT_INPUTS), each up to KEPT_INPUT_BYTES: a job
# whose inputs its page holds sends only their key (51 KB inline in the spec cost 1.5 ms
# of a 10 ms wasm job). Bigger sets (a big model's isolated mode sends every layer's
# inputs) are fetched each job: their GET is small beside their job, and a page kept
# between jobs holds no more than this.
KEPT_INPUTS = 2
KEPT_INPUT_BYTES = 16 << 20


@functools.lru_cache(maxsize=4)
def inline_inputs(joined: bytes) -> str:
    """Inputs as they travel in a spec, encoded once for the four TF.js backends a run
    sends them to (51 KB: 0.37 ms a time here)."""
    return base64.b64encode(joined).decode()


INSTALL_HINT = "install it with `apt-get install -y chromium` (`make install` does this)"


class TfjsSession:
    """What the TF.js runners of one process share: one Chromium, the local server the
    page loads from, and the models exported for it. Playwright is imported here, on
    the first TF.js job, never by a process that only validates a backend id."""

    def __init__(self, chromium_path: Path) -> None:
        from workers.backends.tfjs.browser_host import BrowserHost, BrowserUnavailable

        self.chromium_path = chromium_path
        self.server = HarnessServer()
        self.exports = Path(tempfile.mkdtemp(prefix="driftbench-tfjs-"))
        try:
            self.host: BrowserHost = BrowserHost(chromium_path)
        except BaseException as error:
            self._close_local()
            if isinstance(error, BrowserUnavailable):
                raise BackendUnavailable(f"{error}; {INSTALL_HINT}") from error
            raise
        self._lock = threading.Lock()
        # Weights read back from TF.js, per (model sha256, backend): the same export loads
        # the same way every time, so the page checks it on a backend's first job only.
        self.weights_checked: dict[tuple[str, str], dict[str, Any]] = {}

    def model_url(self, model: ModelArtifact) -> str:
        """Where the page loads the model's TF.js export from (exported once per sha256)."""
        directory = self.exports / model.sha256
        with self._lock:
            if not (directory / "model.json").exists():
                export_model(model.graph, directory)
        return self.server.add_model(model.sha256, directory)

    def _close_local(self) -> None:
        shutil.rmtree(self.exports, ignore_errors=True)
        self.server.stop()

    def close(self) -> None:
        """The exports and the server first: closing the browser may take the rest of the
        time a stopping job process has."""
        self._close_local()
        self.host.close()


def tfjs_session(shared: SharedResources, options: EngineOptions) -> TfjsSession:
    return shared.get(
        f"tfjs:{options.chromium_path}",
        lambda: TfjsSession(options.chromium_path),
        TfjsSession.close,
    )


class TfjsRunner(Runner):
    TFJS_BACKEND: ClassVar[str]
    FLAGS: ClassVar[dict[str, bool]] = {}

    def __init__(
        self, options: EngineOptions = DEFAULT_OPTIONS, shared: SharedResources | None = None
    ) -> None:
        super().__init__(options, shared)
        self._environment: dict[str, Any] = {}
        # The input sets this backend's page keeps, as far as this runner knows (oldest
        # first, like the page's own). A wrong guess costs the page one GET, never a
        # wrong input: the job's channel always holds its inputs.
        self._inputs_held: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def availability(cls, options: EngineOptions) -> str | None:
        if not options.chromium_path.exists():
            return f"Chromium not found at {options.chromium_path}; {INSTALL_HINT}"
        if not TFJS_BUNDLE.exists():
            return f"TF.js is not installed in {TFJS_BUNDLE.parents[3]}; run `make install`"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        package = TFJS_BUNDLE.parents[1] / "package.json"
        return {"tfjs": json.loads(package.read_text())["version"]} if package.exists() else {}

    def activate_impl(self) -> None:
        self.session = tfjs_session(self.shared, self.options)

    def unsupported_reason(self, graph: ModelGraph) -> str | None:
        return export_problem(graph)

    def computed_layers(self, graph: ModelGraph) -> list[LayerSpec]:
        return tfjs_computed(graph)

    @property
    def host(self) -> BrowserHost:
        return self.session.host

    def model_url(self, model: ModelArtifact) -> str:
        return self.session.model_url(model)

    def _job(
        self, model: ModelArtifact, mode: str, tensors: list[np.ndarray], spec_extra: dict[str, Any]
    ) -> LayerOutputs:
        """Run one job in the backend's page: `tensors` are its inputs in the order of the
        `offset`s in `spec_extra`."""
        names = [layer.name for layer in self.computed_layers(model.graph)]
        in_page_names = tfjs_names(model.graph)
        from workers.backends.tfjs.browser_host import BrowserJobFailed

        server = self.session.server
        checked = self.session.weights_checked.get((model.sha256, self.BACKEND))
        joined = b"".join(np.ascontiguousarray(t, "<f4").tobytes() for t in tensors)
        # Only a set the page may keep is named (hashing a big model's isolated inputs
        # would cost more than their GET saves).
        inputs_key = (
            hashlib.blake2b(joined, digest_size=16).hexdigest()
            if len(joined) <= KEPT_INPUT_BYTES
            else None
        )
        spec = {
            "backend": self.TFJS_BACKEND,
            "flags": self.FLAGS,
            "modelUrl": self.model_url(model),
            "mode": mode,
            "layers": [in_page_names[name] for name in names],
            "batchSize": self.options.tfjs_batch_size,
            "checkWeights": checked is None,
            "inputsKey": inputs_key,
            **spec_extra,
        }
        opened: list[str] = []

        async def in_page(page: Page, served: int) -> dict[str, Any]:
            # A channel per attempt: outputs an attempt cut short by a browser restart
            # may still post never land in the retry's.
            job_id, channel = server.open_job(joined)
            opened.append(job_id)
            job_url = f"{server.url}/jobs/{job_id}"
            held = self._inputs_held
            if served == 1:  # a new page holds nothing yet
                held.clear()
            inline = inputs_key not in held and len(joined) <= INLINE_INPUT_BYTES
            try:
                answer = await page.evaluate(
                    "spec => window.driftbench.runJob(spec)",
                    json.dumps(
                        {
                            **spec,
                            "jobUrl": job_url,
                            "inputsBase64": inline_inputs(joined) if inline else None,
                        }
                    ),
                )
            except BaseException:
                held.clear()  # what the page kept is unknown: a miss only costs a GET
                raise
            if inputs_key is not None:
                held[inputs_key] = None
                held.move_to_end(inputs_key)
                while len(held) > KEPT_INPUTS:
                    held.popitem(last=False)
            result = json.loads(answer)
            return {**result, "page_job": served, "channel": channel, "job_url": job_url}

        timeout_s = self.options.browser_job_timeout_s
        try:
            result = self.host.run_in_page(
                self.BACKEND, f"{server.url}/harness.html", in_page, timeout_s=timeout_s
            )
            returned = time.perf_counter()
            outputs = result["channel"].output_arrays(result["shapes"], timeout_s)
            waited_ms = (time.perf_counter() - returned) * 1000
        except BrowserJobFailed as error:
            raise BackendFailed(f"{self.BACKEND}: {error}") from error
        except OutputsNotReceived as error:
            posted = f"POST {result['job_url']}/outputs"
            raise BackendFailed(f"{self.BACKEND}: {posted}: {error}") from error
        finally:
            for job_id in opened:
                server.close_job(job_id)
        if checked is None:
            checked = result["environment"]["weights_roundtrip"]
            self.session.weights_checked[(model.sha256, self.BACKEND)] = checked
        self._environment = {
            **result["environment"],
            "weights_roundtrip": checked,
            "browser_restarts": self.host.restarts,
            "page_job": result["page_job"],
            # How long the outputs took to arrive once the page had sent them and returned.
            "outputs_wait_ms": waited_ms,
            "chromium": str(self.session.chromium_path),
        }
        return dict(zip(names, outputs, strict=True))

    def run_impl(self, model: ModelArtifact, inputs: dict[str, np.ndarray]) -> LayerOutputs:
        for name, array in inputs.items():
            if array.dtype.kind in "iu" and array.size and np.abs(array).max() >= EXACT_IN_F4:
                raise BackendUnsupported(
                    f"input {name!r} holds integers of {EXACT_IN_F4} or more, which the "
                    "float32 transport to the page would round"
                )
        tensors = [inputs[layer.name] for layer in model.graph.inputs]
        return self._job(model, "accumulated", tensors, {"inputs": placed_inputs(tensors)})

    def run_isolated_impl(self, model: ModelArtifact, layer_inputs: LayerInputs) -> LayerOutputs:
        computed = self.computed_layers(model.graph)
        tensors = [array for layer in computed for array in layer_inputs[layer.name]]
        placed = iter(placed_inputs(tensors))
        per_layer = [[next(placed) for _ in layer_inputs[layer.name]] for layer in computed]
        steps = isolated_steps(model.graph)
        return self._job(
            model,
            "isolated",
            tensors,
            {
                "isolatedInputs": per_layer,
                "isolatedSteps": [steps[layer.name] for layer in computed],
            },
        )

    def environment(self) -> dict[str, Any]:
        return self._environment


def placed_inputs(tensors: list[np.ndarray]) -> list[dict[str, Any]]:
    """Where each tensor sits among the job's inputs (in float32 values) and its shape."""
    offsets = np.cumsum([0, *(array.size for array in tensors)])
    return [
        {"offset": int(offset), "shape": list(array.shape)}
        for offset, array in zip(offsets, tensors, strict=False)
    ]


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
