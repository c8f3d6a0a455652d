"""The probe page: `/probe/<token>` runs the run's model in TF.js on whatever browser opens
it (a phone, a laptop with a real GPU) and posts every layer's output back as
`ext:probe/<device>/<backend>`.

No API token is needed: the probe token is the permission, write-only for its own
run's external outputs, until it expires. TF.js and its wasm files are served by the
app from js_harness/node_modules, so the page works with no internet.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import UploadFile

from app.api.deps import InspectorDep, RowId, SessionDep
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.data import external, port_kit, probes, runs, storage
from workers.backends.tfjs.harness_server import NODE_MODULES, STATIC_FILES, WASM_DIR
from workers.engine.external import external_backend
from workers.inspection import ModelInspector

WEB_DIR = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=WEB_DIR / "templates")
router = APIRouter(include_in_schema=False)
PROBE_BACKENDS = ("webgl", "wasm", "cpu", "webgpu")
ASSETS = {
    "tf.min.js": STATIC_FILES["/tfjs/tf.min.js"],
    "tf-backend-wasm.min.js": STATIC_FILES["/tfjs/tf-backend-wasm.min.js"],
    "tf-backend-webgpu.min.js": NODE_MODULES
    / "tfjs-backend-webgpu"
    / "dist"
    / "tf-backend-webgpu.min.js",
    "probe.js": WEB_DIR / "static" / "probe.js",
}
DEVICE_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _tfjs_files(session: Any, inspector: Any, run_id: int) -> tuple[Path, dict[str, Any]]:
    """The run's model exported for TF.js and which node each exported layer is; 409 when
    TF.js cannot run it."""
    run = runs.get_run(session, run_id)
    directory = port_kit.port_files(run.model, inspector)
    described = port_kit.weights_description(run.model, inspector)["tfjs"]
    if described["unsupported"]:
        raise Conflict(f"TF.js cannot run this model: {described['unsupported']}")
    return directory / "tfjs", described


@router.get("/probe/{token}", response_class=HTMLResponse)
def probe_page(
    request: Request, session: SessionDep, inspector: InspectorDep, token: str
) -> Response:
    run_id = probes.probe_run(token)
    _, described = _tfjs_files(session, inspector, run_id)
    run = runs.get_run(session, run_id)
    input_set = next(s for s in run.model.input_sets if s.id == run.input_set_id)
    base = f"/probe/{token}"
    config = {
        "runId": run_id,
        "modelUrl": f"{base}/model/model.json",
        "postUrl": f"{base}/runs/{run_id}/outputs",
        "inputs": [
            {"url": f"{base}/inputs/{i}", "shape": input_set.shapes[item["node"]]}
            for i, item in enumerate(described["inputs"])
        ],
        "layers": described["layers"],
        "backends": list(PROBE_BACKENDS),
        "assets": "/probe-assets",
    }
    return templates.TemplateResponse(request, "probe.html", {"config": config, "run": run_id})


@router.get("/probe/{token}/model/{filename}")
def probe_model(
    session: SessionDep, inspector: InspectorDep, token: str, filename: str
) -> Response:
    run_id = probes.probe_run(token)
    directory, _ = _tfjs_files(session, inspector, run_id)
    if filename not in ("model.json", "weights.bin"):
        raise NotFound("probe file", filename)
    return FileResponse(directory / filename)


@router.get("/probe/{token}/inputs/{index}")
def probe_inputs(session: SessionDep, inspector: InspectorDep, token: str, index: int) -> Response:
    """Input `index` of the run as raw little-endian float32 bytes (token ids included:
    TF.js takes them as floats, exact below 2^24)."""
    run_id = probes.probe_run(token)
    _, described = _tfjs_files(session, inspector, run_id)
    run = runs.get_run(session, run_id)
    if not 0 <= index < len(described["inputs"]):
        raise NotFound("probe input", index)
    input_set = next(s for s in run.model.input_sets if s.id == run.input_set_id)
    arrays = port_kit.input_arrays(input_set)
    array = arrays[described["inputs"][index]["node"]]
    return Response(
        np.ascontiguousarray(array, "<f4").tobytes(), media_type="application/octet-stream"
    )


@router.post("/probe/{token}/runs/{run_id}/outputs", status_code=201)
async def probe_outputs(request: Request, token: str, run_id: RowId) -> dict[str, Any]:
    """One TF.js backend's outputs from the device: a multipart form with `meta` (JSON:
    backend, device, environment, layers with their shapes) and `layer<i>` (raw float32)."""
    probes.probe_run(token, run_id)
    form = await request.form()
    try:
        meta = json.loads(str(form.get("meta") or ""))
    except ValueError:
        raise InvalidRequest("the probe's 'meta' field is not JSON") from None
    backend = str(meta.get("backend", ""))
    if backend not in PROBE_BACKENDS:
        raise InvalidRequest(f"probe backend {backend!r} is none of {', '.join(PROBE_BACKENDS)}")
    device = DEVICE_UNSAFE.sub("-", str(meta.get("device") or "device")).strip("-.")[:40]
    name = external_backend(f"probe/{device or 'device'}/{backend}")
    arrays = {}
    for index, layer in enumerate(meta.get("layers", [])):
        part = form.get(f"layer{index}")
        if not isinstance(part, UploadFile):
            raise InvalidRequest(f"the probe sent no bytes for layer {layer.get('name')!r}")
        data = await part.read()
        shape = tuple(int(d) for d in layer.get("shape", []))
        if len(data) != 4 * int(np.prod(shape)):
            raise InvalidRequest(
                f"layer {layer.get('name')!r}: {len(data)} bytes for shape {shape}"
            )
        arrays[str(layer["name"])] = np.frombuffer(data, dtype="<f4").reshape(shape)
    environment = {"probe": {**dict(meta.get("environment") or {}), "device": device}}
    inspector = request.app.state.inspector
    return await run_in_threadpool(_store_probe, run_id, name, arrays, environment, inspector)


def _store_probe(
    run_id: int,
    backend: str,
    arrays: dict[str, np.ndarray],
    environment: dict[str, Any],
    inspector: ModelInspector,
) -> dict[str, Any]:
    with storage.staged_file(".npz") as staged:
        staged.write_bytes(port_kit.npz_bytes(arrays))
        return external.store_external(
            run_id=run_id,
            backend=backend,
            mode="accumulated",
            upload=staged,
            note=None,
            inspector=inspector,
            environment=environment,
        )


@router.get("/probe-assets/{filename}")
def probe_asset(filename: str) -> FileResponse:
    if filename in ASSETS:
        return FileResponse(ASSETS[filename], media_type="text/javascript")
    wasm = WASM_DIR / filename
    if filename.endswith(".wasm") and "/" not in filename and wasm.is_file():
        return FileResponse(wasm, media_type="application/wasm")
    raise NotFound("probe asset", filename)
