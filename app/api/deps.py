"""Dependencies shared by the routers: the settings, the model registry, the work pools and
the upload budget.

All ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
dependency per request for what is an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.upload_budget import UploadBudget
from app.errors import NotReadyError
from app.registry import ModelRegistry
from app.settings import Settings
from app.workpool import WorkPools


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_ready_registry(
    registry: Annotated[ModelRegistry, Depends(get_registry)],
) -> ModelRegistry:
    """The registry, or a 503 ``not_ready`` error saying why it cannot serve yet."""
    registry.require_ready()
    return registry


async def get_work_pools(request: Request) -> WorkPools:
    """The app's decode/feature pools (made by the lifespan), or a 503 ``not_ready`` error
    before start-up and once shutdown has begun."""
    pools: WorkPools | None = request.app.state.work_pools
    if pools is None:
        raise NotReadyError("the server is starting or shutting down")
    return pools


async def get_upload_budget(request: Request) -> UploadBudget:
    budget: UploadBudget = request.app.state.upload_budget
    return budget


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ReadyRegistryDep = Annotated[ModelRegistry, Depends(get_ready_registry)]
WorkPoolsDep = Annotated[WorkPools, Depends(get_work_pools)]
UploadBudgetDep = Annotated[UploadBudget, Depends(get_upload_budget)]
