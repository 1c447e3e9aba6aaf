"""The FastAPI application: ``create_app(settings)`` builds it, its lifespan loads the models.

Run it with ``python -m app`` (see :mod:`app.cli`) or any ASGI server:
``uvicorn --factory app.main:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from app import __version__, metrics
from app.api import models, ops, predict, stream
from app.api.admission import StreamAdmission
from app.api.apidocs import mount_docs
from app.api.head import HeadAsGetMiddleware
from app.api.page import mount_page
from app.api.security import SecurityMiddleware
from app.api.upload import UploadDeadlineMiddleware
from app.api.upload_budget import UploadBudget
from app.errors import install_error_handlers
from app.http_edge import install_log_filter
from app.logs import RequestLogMiddleware, configure_logging
from app.registry import ModelRegistry
from app.settings import Settings
from app.vad import default_detector
from app.workpool import WorkPools

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Speech emotion recognition (8 classes) with a CNN-Transformer on log-mel features, "
    "served with ONNX Runtime. POST a clip to /v1/predict, or stream PCM over /ws/stream."
)


def _publish_models(registry: ModelRegistry) -> None:
    metrics.MODEL_INFO.clear()
    for key in registry.names:
        model = registry.models[key]
        metrics.MODEL_INFO.labels(
            model=key,
            name=model.metadata.name,
            version=model.metadata.version,
            provider=model.provider,
            default=str(key == registry.default_name).lower(),
        ).set(1)
    metrics.MODELS_READY.set(1 if registry.ready else 0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every model once (off the event loop) and make the work pools before serving;
    close both at shutdown."""
    settings: Settings = app.state.settings
    # numpy's BLAS (the mel filterbank product) would start a thread per core for every call
    # from every lane thread, and its idle threads spin: two lane threads featurising at once
    # ran at 157 clips/s against 320 with one BLAS thread each (the lanes are the parallelism).
    threadpool_limits(limits=1, user_api="blas")
    await asyncio.to_thread(default_detector)  # the speech gate, loaded before any request
    registry = await asyncio.to_thread(ModelRegistry.load, settings)
    pools = WorkPools.from_settings(settings)
    app.state.registry = registry
    app.state.work_pools = pools
    _publish_models(registry)
    log.info(
        "startup complete",
        extra={
            "event": "startup",
            "ready": registry.ready,
            "models": list(registry.names),
            "default_model": registry.default_name,
            "reason": registry.not_ready_reason,
        },
    )
    try:
        yield
    finally:
        app.state.registry = ModelRegistry.empty("the server is shutting down")
        app.state.work_pools = None
        metrics.MODELS_READY.set(0)
        await asyncio.to_thread(pools.close)  # waits for the running decodes, drops the queued
        await asyncio.to_thread(registry.close)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the models load when its lifespan starts (``with TestClient(app)``)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    install_log_filter()
    app = FastAPI(
        title="Speech emotion recognition",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by app.api.apidocs, with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = ModelRegistry.empty("the models are loading")
    app.state.work_pools = None  # made by the lifespan
    app.state.stream_admission = StreamAdmission.from_settings(settings)
    app.state.upload_budget = UploadBudget(settings.upload_buffer_bytes)
    install_error_handlers(app)
    app.add_middleware(
        UploadDeadlineMiddleware,
        timeout_s=settings.upload_timeout_s,
        min_rate_bytes_s=settings.upload_min_rate_bytes_s,
        grace_s=settings.upload_rate_grace_s,
    )
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(SecurityMiddleware, allowed_hosts=settings.allowed_host_set)
    app.add_middleware(RequestLogMiddleware)
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(ops.router)
    app.include_router(stream.router)
    stream.install_websocket_fallback(app)
    mount_page(app)
    mount_docs(app)
    return app
