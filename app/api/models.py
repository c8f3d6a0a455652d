"""/api/models: upload, list, read and delete models, and add input sets to them."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.api.deps import InspectorDep, Limit, RowId, SessionDep, Skip
from app.core.config import settings
from app.core.errors import InvalidRequest
from app.data import storage, uploads
from app.data.orm import InputSet, StoredModel
from app.schemas import ErrorPublic, InputGenerate, InputSetPublic, ModelPublic, ModelsPublic
from workers.engine.inputs import (
    InputRecipe,
    check_generated_size,
    check_input_shapes,
    generate_inputs,
    load_input_file,
)

router = APIRouter(prefix="/models", tags=["models"])
STORAGE_FULL = {
    "model": ErrorPublic,
    "description": "No space left in the data directory; nothing was stored",
}


@router.post(
    "",
    response_model=ModelPublic,
    status_code=201,
    responses={
        200: {"model": ModelPublic, "description": "Same bytes already stored"},
        413: {"model": ErrorPublic, "description": "Upload over the size limit"},
        415: {"model": ErrorPublic, "description": "Not a .keras or .h5 file"},
        422: {"model": ErrorPublic, "description": "Unsafe or unparseable model"},
        507: STORAGE_FULL,
    },
)
def upload_model(
    session: SessionDep,
    inspector: InspectorDep,
    response: Response,
    file: Annotated[UploadFile, File(description=".keras or .h5 model file")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    tags: Annotated[str | None, Form(description="comma-separated tags")] = None,
) -> StoredModel:
    tag_list = [tag.strip() for tag in (tags or "").split(",") if tag.strip()]
    model, created = uploads.create_model(
        session,
        inspector=inspector,
        upload=file.file,
        filename=file.filename or "model",
        name=name,
        tags=tag_list,
    )
    if not created:
        response.status_code = 200
    return model


@router.get("", response_model=ModelsPublic)
def list_models(session: SessionDep, skip: Skip = 0, limit: Limit = 100) -> dict[str, Any]:
    count, models = uploads.list_models(session, skip=skip, limit=limit)
    return {"count": count, "data": models}


@router.get("/{model_id}", response_model=ModelPublic)
def read_model(session: SessionDep, model_id: RowId) -> StoredModel:
    return uploads.get_model(session, model_id)


@router.delete("/{model_id}", status_code=204)
def delete_model(session: SessionDep, model_id: RowId) -> Response:
    """Removes the model, its input sets, runs, results and their files."""
    uploads.delete_model(session, model_id=model_id)
    return Response(status_code=204)


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
    "/{model_id}/inputs",
    response_model=InputSetPublic,
    status_code=201,
    responses={507: STORAGE_FULL},
    openapi_extra=INPUTS_BODY,
)
async def create_input_set(session: SessionDep, model_id: RowId, request: Request) -> InputSet:
    """An uploaded .npy/.npz (multipart `file`) or a generator spec (JSON).

    Only reading the body happens on the event loop; the database, numpy and the
    files run on the thread pool, so one slow request never stalls the others.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        upload = (await request.form()).get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("multipart body needs a 'file' field holding a .npy or .npz")
        return await run_in_threadpool(_input_set_from_file, session, model_id, upload)
    body = await request.body()
    return await run_in_threadpool(_input_set_from_spec, session, model_id, body)


def _input_set_from_file(session: Session, model_id: int, upload: UploadFile) -> InputSet:
    model = uploads.get_model(session, model_id)
    suffix = ".npz" if (upload.filename or "").endswith(".npz") else ".npy"
    with storage.staged_file(suffix, upload.filename) as staged:
        uploads.copy_limited(upload.file, staged)
        inputs = load_input_file(
            staged,
            uploads.input_shapes(model),
            settings.max_input_bytes,
            uploads.input_dtypes(model),
        )
    return uploads.create_input_set(
        session, model=model, kind="npy", params={"filename": upload.filename}, inputs=inputs
    )


def _input_set_from_spec(session: Session, model_id: int, body: bytes) -> InputSet:
    model = uploads.get_model(session, model_id)
    shapes = uploads.input_shapes(model)
    try:
        spec = InputGenerate.model_validate(json.loads(body or b"null"))
    except (ValueError, TypeError) as error:
        raise InvalidRequest(
            f"expected a JSON generator spec or a multipart .npy upload: {error}"
        ) from None
    if spec.batch > settings.max_batch:
        raise InvalidRequest(
            f"batch {spec.batch} is over the limit of {settings.max_batch} (DRIFTBENCH_MAX_BATCH)"
        )
    recipe = InputRecipe(**spec.model_dump())
    check_generated_size(recipe.batch, shapes, settings.max_input_bytes)
    inputs = generate_inputs(recipe, shapes, uploads.input_dtypes(model))
    check_input_shapes(inputs, shapes)
    return uploads.create_input_set(
        session, model=model, kind=spec.kind, params=spec.model_dump(), inputs=inputs
    )
