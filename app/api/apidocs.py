"""The API docs, ``/docs`` (Swagger UI) and ``/redoc``, from assets the service ships.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank wherever the service
has no internet, as a self-hosted service (or our image behind its gateway) often has not. The
same pages are served here with the scripts and styles of the ``fastapi-offline`` package (a
maintained copy of exactly those assets, MIT), mounted at :data:`ASSETS_URL`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from app.api.security import docs_policy
from app.api.static import AssetFiles

ASSETS_URL: Final[str] = "/docs-assets"
DOCS_URL: Final[str] = "/docs"
REDOC_URL: Final[str] = "/redoc"
OAUTH2_REDIRECT_URL: Final[str] = "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    """The folder holding ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``
    and ``favicon.png``, found without importing the package."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the fastapi-offline package (the /docs assets) is not installed")
    return Path(spec.origin).parent / "static"


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["content-security-policy"] = docs_policy(bytes(page.body))
    return page


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    base = _base(request)
    return _with_policy(
        get_swagger_ui_html(
            openapi_url=base + request.app.openapi_url,
            title=f"{request.app.title}: API",
            swagger_js_url=f"{base}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{base}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=base + OAUTH2_REDIRECT_URL,
        )
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return _with_policy(get_swagger_ui_oauth2_redirect_html())


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    base = _base(request)
    return _with_policy(
        get_redoc_html(
            openapi_url=base + request.app.openapi_url,
            title=f"{request.app.title}: API",
            redoc_js_url=f"{base}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{base}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
    )


def mount_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` with local assets (create the app with ``docs_url=None,
    redoc_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS_URL, AssetFiles(assets_dir()), name="docs-assets")
