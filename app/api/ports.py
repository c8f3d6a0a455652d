"""Your own port: upload its outputs as backend `ext:<name>`, download what it needs (the
weights in Keras's layout, the inputs, each layer's reference input) and make a probe
link a real device opens to run TF.js there."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import FileResponse

from app.api.deps import InspectorDep, RowId, SessionDep
from app.core.config import settings
from app.core.errors import InvalidRequest, NotFound, TooLarge
from app.data import divergences, external, port_kit, probes, runs, storage, uploads
from app.data.orm import InputSet
from app.schemas import ErrorPublic, ExternalPublic, ProbePublic
from workers.engine.external import external_backend

router = APIRouter(tags=["your own port"])
# Past this many values the JSON form of the weights is refused: ask for the .npz.
JSON_WEIGHTS_MAX_VALUES = 2_000_000


def _attachment(content: bytes, filename: str) -> Response:
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post(
    "/runs/{run_id}/external",
    response_model=ExternalPublic,
    status_code=201,
    responses={
        409: {"model": ErrorPublic, "description": "The run has not finished"},
        422: {"model": ErrorPublic, "description": "A key, shape or dtype that does not fit"},
    },
)
def upload_external(
    session: SessionDep,
    inspector: InspectorDep,
    run_id: RowId,
    name: Annotated[str, Form(description="the port's name: the backend becomes ext:<name>")],
    file: Annotated[UploadFile, File(description=".npz keyed by layer name, any subset")],
    mode: Annotated[Literal["accumulated", "isolated"], Form()] = "accumulated",
    note: Annotated[str | None, Form(max_length=2000)] = None,
) -> dict[str, Any]:
    """Add backend `ext:<name>` to a finished run from its per-layer outputs and compare
    it like any backend; the same name again replaces that mode's outputs."""
    backend = external_backend(name)
    runs.get_run(session, run_id)
    with storage.staged_file(".npz", file.filename) as staged:
        uploads.copy_limited(file.file, staged)
        stored = external.store_external(
            run_id=run_id,
            backend=backend,
            mode=mode,
            upload=staged,
            note=note,
            inspector=inspector,
        )
    return _with_summary(session, stored, mode)


def _with_summary(session: Any, stored: dict[str, Any], mode: str) -> dict[str, Any]:
    """The stored backend with its comparison against the run's reference."""
    session.expire_all()
    run = runs.get_run(session, stored["run_id"])
    rows = divergences.read_rows(
        session, run, against=run.reference, mode=mode, backend=stored["backend"]
    )
    graph = divergences.stored_graph(run.model)
    return {
        **stored,
        "against": run.reference,
        "mode": mode,
        "compared_layers": len(rows),
        "drift_start": divergences.drift_starts(rows).get(stored["backend"]),
        "not_provided": divergences.not_provided(rows, graph).get(
            stored["backend"], [layer.name for layer in graph.compute_layers]
        ),
    }


@router.get(
    "/runs/{run_id}/feeds",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_feeds(
    session: SessionDep, run_id: RowId, dtype: Literal["float32", "float64"] = "float32"
) -> Response:
    """An .npz of each layer's reference input, keyed '<layer>' ('<layer>:<i>' for a layer
    with several inputs): feed a port one layer at a time, upload with mode=isolated."""
    run = runs.get_run(session, run_id)
    feeds = port_kit.reference_feeds(run, dtype)
    return _attachment(port_kit.npz_bytes(feeds), f"run{run_id}-feeds.npz")


@router.get(
    "/models/{model_id}/weights",
    responses={200: {"content": {"application/octet-stream": {}, "application/json": {}}}},
)
def download_weights(
    session: SessionDep,
    inspector: InspectorDep,
    model_id: RowId,
    format: Literal["npz", "json"] = "npz",
    values: bool = True,
) -> Any:
    """Every weight in Keras's own layout, keyed '<layer>/<weight>'; the JSON form names
    each one's layout (HWIO, (in, out), gate order) beside its values."""
    model = uploads.get_model(session, model_id)
    directory = port_kit.port_files(model, inspector)
    if format == "npz":
        return FileResponse(
            directory / "weights.npz",
            media_type="application/octet-stream",
            filename=f"model{model_id}-weights.npz",
        )
    described = port_kit.weights_description(model, inspector)
    if not values:
        return {"model_id": model_id, "weights": described["weights"]}
    total = sum(_size(w["shape"]) for w in described["weights"])
    if total > JSON_WEIGHTS_MAX_VALUES:
        raise TooLarge(
            f"the model has {total} weight values, over the {JSON_WEIGHTS_MAX_VALUES} the "
            "JSON form carries: download format=npz (format=json&values=false lists the "
            "layouts alone)"
        )
    arrays = port_kit.load_npz(directory / "weights.npz")
    return {
        "model_id": model_id,
        "weights": [{**w, "values": arrays[w["key"]].tolist()} for w in described["weights"]],
    }


@router.get(
    "/models/{model_id}/port.c",
    responses={
        200: {"content": {"text/x-c": {}}},
        422: {"model": ErrorPublic, "description": "A layer the C port cannot generate"},
    },
)
def download_c_port(
    session: SessionDep,
    inspector: InspectorDep,
    model_id: RowId,
    target: Literal["source", "header"] = "source",
) -> FileResponse:
    """The model as a self-contained C99 program (the `c` backend's source): one function
    per layer, the weights as arrays, a `main` that reads inputs from a file and writes
    every layer's output; `target=header` gives what another program needs to call it."""
    model = uploads.get_model(session, model_id)
    path = port_kit.c_port_file(model, inspector, header=target == "header")
    return FileResponse(
        path, media_type="text/x-c", filename=f"model{model_id}-port.{path.suffix[1:]}"
    )


def _size(shape: list[int]) -> int:
    size = 1
    for dim in shape:
        size *= dim
    return size


@router.get(
    "/input-sets/{input_set_id}/data",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_inputs(
    session: SessionDep, input_set_id: RowId, format: Literal["npy", "npz"] = "npz"
) -> Response:
    """The input set's arrays: .npz keyed by input name, or .npy for a one-input model."""
    input_set = session.get(InputSet, input_set_id)
    if input_set is None:
        raise NotFound("input set", input_set_id)
    arrays = port_kit.input_arrays(input_set)
    if format == "npz":
        return _attachment(port_kit.npz_bytes(arrays), f"inputs{input_set_id}.npz")
    if len(arrays) != 1:
        raise InvalidRequest(
            f"input set {input_set_id} holds {len(arrays)} inputs ({', '.join(arrays)}); "
            "ask for format=npz"
        )
    (array,) = arrays.values()
    return _attachment(port_kit.npy_bytes(array), f"inputs{input_set_id}.npy")


@router.post("/runs/{run_id}/probe", response_model=ProbePublic, status_code=201)
def create_probe(
    session: SessionDep, inspector: InspectorDep, request: Request, run_id: RowId
) -> dict[str, Any]:
    """A link any browser can open to run TF.js on its own hardware and post each layer's
    output back to this run as ext:probe/<device>/<backend>."""
    run = runs.get_run(session, run_id)
    external.check_run_takes_external(run_id)
    unsupported = port_kit.weights_description(run.model, inspector)["tfjs"]["unsupported"]
    if unsupported:
        raise InvalidRequest(f"TF.js cannot run this model, so no probe: {unsupported}")
    token, expires_at = probes.create_probe(session, run, settings.probe_ttl_s)
    path = f"/probe/{token}"
    url = str(request.base_url).rstrip("/") + path
    return {
        "run_id": run_id,
        "path": path,
        "url": url,
        "expires_at": expires_at,
        "qr_svg": port_kit.qr_svg(url),
    }
