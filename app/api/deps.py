"""Typed dependencies shared by the routers."""

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.orm import Session

from app.core.db import get_session
from app.schemas import MAX_ROW_ID
from workers.inspection import ModelInspector

SessionDep = Annotated[Session, Depends(get_session)]

# Ids and offsets beyond a 64-bit integer are answered 422 here; the database would fail.
RowId = Annotated[int, Path(ge=0, le=MAX_ROW_ID)]
RowIdFilter = Annotated[int | None, Query(ge=0, le=MAX_ROW_ID)]
Skip = Annotated[int, Query(ge=0, le=MAX_ROW_ID, description="rows to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="most rows to return")]


def get_inspector(request: Request) -> ModelInspector:
    return request.app.state.inspector


InspectorDep = Annotated[ModelInspector, Depends(get_inspector)]
