"""Aggregate drift: per layer of one model, and per depth across an architecture."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import RowId, SessionDep
from app.data.drift_queries import depth_drift, model_layer_drift
from app.data.uploads import get_model
from app.schemas import DepthDriftPublic, Metric, ModelDriftPublic, ModeName
from workers.backends.registry import DEFAULT_REFERENCE, comparable_backend

router = APIRouter(tags=["drift"])


@router.get("/models/{model_id}/drift", response_model=ModelDriftPublic)
def model_drift(
    session: SessionDep,
    model_id: RowId,
    backend: str,
    against: str = DEFAULT_REFERENCE,
    metric: Metric = Metric.rel_l2,
    mode: ModeName = "accumulated",
) -> dict[str, Any]:
    """Per layer over all runs of the model: count, mean, median, p95 and max of the metric
    (median and p95 within 1%: app.data.quantile_sketch)."""
    get_model(session, model_id)
    comparable_backend(backend)
    comparable_backend(against)
    layers = model_layer_drift(
        session, model_id=model_id, backend=backend, against=against, mode=mode, metric=metric
    )
    return {
        "model_id": model_id,
        "backend": backend,
        "against": against,
        "mode": mode,
        "metric": metric,
        "layers": layers,
    }


@router.get("/drift/depth", response_model=DepthDriftPublic)
def drift_by_depth(
    session: SessionDep,
    architecture: str,
    backend: str,
    against: str = DEFAULT_REFERENCE,
    metric: Metric = Metric.rel_l2,
    mode: ModeName = "accumulated",
) -> dict[str, Any]:
    """Over every model with this architecture signature: drift per depth and its growth."""
    comparable_backend(backend)
    comparable_backend(against)
    models, depths = depth_drift(
        session,
        architecture=architecture,
        backend=backend,
        against=against,
        mode=mode,
        metric=metric,
    )
    return {
        "architecture": architecture,
        "backend": backend,
        "against": against,
        "mode": mode,
        "metric": metric,
        "models": models,
        "depths": depths,
    }
