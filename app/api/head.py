"""``HEAD`` wherever ``GET`` is served (RFC 9110, 9.3.2).

FastAPI's routes answer only the methods they list, so ``HEAD /healthz`` was a 405 and uptime
checkers that probe with ``HEAD`` reported the service down. :class:`HeadAsGetMiddleware` runs
a ``HEAD`` request through the app as a ``GET`` and lets the server drop the body: the ASGI
server sees the original ``HEAD`` scope, and uvicorn writes no body for it while keeping the
``GET``'s headers (``Content-Length`` included).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send)
        finally:
            # What routing added (the matched route, its path parameters) is the request's;
            # the method stays HEAD for the server and the request log.
            scope.update({key: value for key, value in as_get.items() if key != "method"})
