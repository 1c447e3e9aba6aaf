"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from app import metrics
from app.api.deps import RegistryDep
from app.errors import EngineFailedError, error_docs

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    models: list[str]
    default_model: str


@router.get("/healthz", response_model=Health, responses=error_docs(503))
async def healthz(registry: RegistryDep) -> Health:
    """Liveness: the process is up and its event loop answers, and no model's engine has
    failed for good (503 ``engine_failed``: restart the process, e.g. a GPU fault)."""
    broken = registry.broken_engine
    if broken is not None:
        raise EngineFailedError(f"{broken}: restart the server")
    return Health()


@router.get("/readyz", response_model=Readiness, responses=error_docs(503))
async def readyz(registry: RegistryDep) -> Readiness:
    """Readiness: models loaded, metadata checked, warm-up done. 503 with the reason if not."""
    metrics.MODELS_READY.set(1 if registry.ready else 0)
    registry.require_ready()  # else a 503 not_ready error with the reason
    assert registry.default_name is not None  # a ready registry has its default model
    return Readiness(models=list(registry.names), default_model=registry.default_name)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus metrics of this process, in the text exposition format."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
