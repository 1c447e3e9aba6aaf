"""``python -m app`` / ``ser-serve``: run the service with uvicorn.

Flags override the environment (``SER_HOST``, ``SER_PORT``, ``SER_WORKERS``); every other
setting is read from ``SER_*`` variables by :class:`app.settings.Settings` in each worker.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn

from app.http_edge import EdgeHttpProtocol
from app.logs import configure_logging
from app.settings import Settings
from app.ws_edge import EdgeWebSocketProtocol

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not an integer") from None


def _program(argv0: str) -> str:
    """``ser-serve`` when run as that script, ``python -m app`` when run as the module."""
    name = os.path.basename(argv0)
    return "python -m app" if name in ("__main__.py", "") else name


def _check_port_free(host: str, port: int) -> None:
    """Fail at once on a port in use, not after loading every model (uvicorn binds late)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as e:
            raise SystemExit(f"cannot listen on {host}:{port}: {e.strerror}") from None


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or _program(sys.argv[0]),
        description="Serve speech emotion recognition over HTTP and WebSocket. Every other "
        "setting is an environment variable (SER_MODELS_DIR, SER_PROVIDERS, SER_DEFAULT_MODEL, "
        "SER_MAX_BATCH_SIZE, ...): docs/api.md, 'Settings', lists them all.",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("SER_HOST", DEFAULT_HOST),
        help=f"interface to bind (env SER_HOST; default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_int("SER_PORT", DEFAULT_PORT),
        help=f"TCP port (env SER_PORT; default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_int("SER_WORKERS", 1),
        help="worker processes, each loading every model (env SER_WORKERS; default 1)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536 or args.workers < 1:
        raise SystemExit("--port must be 1-65535 and --workers at least 1")
    try:
        settings = Settings()  # fail here, once, on a bad SER_* value
    except ValueError as e:
        raise SystemExit(f"invalid settings:\n{e}") from None
    configure_logging(settings.log_level, settings.log_json)
    _check_port_free(args.host, args.port)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,  # keep our JSON logging
        access_log=False,  # app.logs writes one line per request instead
        proxy_headers=True,  # trust X-Forwarded-* from FORWARDED_ALLOW_IPS (default localhost)
        # The edges, explicit: header deadline and size (EdgeHttpProtocol reads them from the
        # settings), idle keep-alive, WebSocket frames refused by uvicorn above twice the
        # service's own frame limit (the service answers frames up to that with a JSON error).
        http=EdgeHttpProtocol,
        # WebSocket upgrades: refused handshakes answered, a handshake deadline, a bounded
        # ping rate (app.ws_edge).
        ws=EdgeWebSocketProtocol,
        timeout_keep_alive=settings.http_keep_alive_s,
        ws_max_size=2 * settings.stream_max_frame_bytes,
        # PCM barely compresses and the messages are small: deflating every frame cost the
        # server more CPU per stream window than featurising it (py-spy, 80 sessions).
        ws_per_message_deflate=False,
    )
