"""The web page at ``/`` (upload a clip or stream the microphone); its assets under ``/static``.

Plain static files in ``app/static`` (no build step, no external resources).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

from app.api.static import AssetFiles

STATIC_DIR: Final[Path] = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def mount_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets at ``/static``."""
    app.include_router(router)
    app.mount("/static", AssetFiles(STATIC_DIR), name="static")
