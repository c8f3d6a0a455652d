"""/api/models: upload, list, read and delete models, and add input sets to them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy import func, select

from app import storage
from app.api.deps import InspectorDep, SessionDep
from app.config import settings
from app.errors import ApiError, not_found
from app.model_uploads import create_model
from app.models import InputSet, Model, Run
from app.schemas import InputGenerate, InputSetPublic, ModelPublic, ModelsPublic
from workers.inputs import (
    InputError,
    InputRecipe,
    check_input_shapes,
    generate_inputs,
    load_input_file,
)

router = APIRouter(prefix="/models", tags=["models"])


@router.post(
    "",
    response_model=ModelPublic,
    status_code=201,
    responses={
        200: {"model": ModelPublic, "description": "Same bytes already stored"},
        413: {"description": "Upload over the size limit"},
        415: {"description": "Not a .keras or .h5 file"},
        422: {"description": "Unsafe or unparseable model"},
    },
)
def upload_model(
    session: SessionDep,
    inspector: InspectorDep,
    response: Response,
    file: Annotated[UploadFile, File(description=".keras or .h5 model file")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    tags: Annotated[str | None, Form(description="comma-separated tags")] = None,
) -> Model:
    tag_list = [tag.strip() for tag in (tags or "").split(",") if tag.strip()]
    model, created = create_model(
        session, inspector, file.file, file.filename or "model", name, tag_list
    )
    if not created:
        response.status_code = 200
    return model


@router.get("", response_model=ModelsPublic)
def list_models(session: SessionDep, skip: int = 0, limit: int = 100) -> dict[str, Any]:
    count = session.scalar(select(func.count()).select_from(Model)) or 0
    models = session.scalars(
        select(Model).order_by(Model.id).offset(max(skip, 0)).limit(min(max(limit, 0), 1000))
    ).all()
    return {"count": count, "data": models}


def get_model_or_404(session: SessionDep, model_id: int) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise not_found("model", model_id)
    return model


@router.get("/{model_id}", response_model=ModelPublic)
def read_model(session: SessionDep, model_id: int) -> Model:
    return get_model_or_404(session, model_id)


@router.delete("/{model_id}", status_code=204)
def delete_model(session: SessionDep, model_id: int) -> Response:
    """Removes the model, its input sets, runs, results and their files."""
    model = get_model_or_404(session, model_id)
    run_ids = session.scalars(select(Run.id).filter_by(model_id=model_id)).all()
    if any(session.get(Run, run_id).status in ("queued", "running") for run_id in run_ids):
        raise ApiError(409, f"model {model_id} has runs in progress; delete it when they finish")
    path = storage.model_path(model.sha256, model.file_format)
    session.delete(model)
    session.commit()
    path.unlink(missing_ok=True)
    for run_id in run_ids:
        storage.remove_run_outputs(run_id)
    return Response(status_code=204)


def _input_shapes(model: Model) -> dict[str, tuple[int | None, ...]]:
    return {
        layer["name"]: tuple(layer["output_shape"])
        for layer in model.layers
        if layer["class_name"] == "InputLayer"
    }


def _store_input_set(
    session: SessionDep,
    model: Model,
    kind: str,
    params: dict[str, Any],
    inputs: dict[str, np.ndarray],
) -> InputSet:
    input_set = InputSet(
        model_id=model.id,
        kind=kind,
        params=params,
        shapes={name: list(array.shape) for name, array in inputs.items()},
        nonfinite=int(sum(np.count_nonzero(~np.isfinite(a)) for a in inputs.values())),
        sha256=storage.store_inputs(inputs),
    )
    session.add(input_set)
    session.commit()
    return input_set


INPUTS_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": InputGenerate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npy (one input) or .npz keyed by input name",
                        },
                    },
                },
            },
        },
        "required": True,
    }
}


@router.post(
    "/{model_id}/inputs", response_model=InputSetPublic, status_code=201, openapi_extra=INPUTS_BODY
)
async def create_input_set(session: SessionDep, model_id: int, request: Request) -> InputSet:
    """An uploaded .npy/.npz (multipart `file`) or a generator spec (JSON)."""
    model = get_model_or_404(session, model_id)
    shapes = _input_shapes(model)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "multipart body needs a 'file' field holding a .npy or .npz")
        with storage.staged_file(".npz") as staged:
            staged.write_bytes(await upload.read())
            inputs = load_input_file(staged, shapes)
        return _store_input_set(session, model, "npy", {"filename": upload.filename}, inputs)
    try:
        spec = InputGenerate.model_validate(json.loads(await request.body() or b"null"))
    except (ValueError, TypeError) as error:
        raise ApiError(
            422, f"expected a JSON generator spec or a multipart .npy upload: {error}"
        ) from None
    if spec.batch > settings.max_batch:
        raise ApiError(
            422,
            f"batch {spec.batch} is over the limit of {settings.max_batch} (DRIFTBENCH_MAX_BATCH)",
        )
    try:
        recipe = InputRecipe(**spec.model_dump())
    except InputError as error:
        raise ApiError(422, str(error)) from None
    inputs = generate_inputs(recipe, shapes)
    check_input_shapes(inputs, shapes)
    return _store_input_set(session, model, spec.kind, spec.model_dump(), inputs)
