"""Typed dependencies shared by the routers."""

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db import get_session
from workers.model_inspection import ModelInspector

SessionDep = Annotated[Session, Depends(get_session)]


def get_inspector(request: Request) -> ModelInspector:
    return request.app.state.inspector


InspectorDep = Annotated[ModelInspector, Depends(get_inspector)]
