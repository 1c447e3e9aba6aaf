"""Prometheus metrics of the service, module-level so every router shares them.

Served at ``/metrics`` in the Prometheus text format. Each server process keeps its own
counters (behind the gateway, scrape every replica). Durations are in seconds.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS: Final[tuple[float, ...]] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)

HTTP_REQUESTS = Counter(
    "ser_http_requests",
    "HTTP requests handled, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "ser_http_request_duration_seconds",
    "Time from request start to the end of the response, by route, method and status.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS_S,
)
INFERENCE_SECONDS = Histogram(
    "ser_inference_duration_seconds",
    "ONNX Runtime time of one micro-batch (session.run), by model.",
    ["model"],
    buckets=LATENCY_BUCKETS_S,
)
BATCH_SIZE = Histogram(
    "ser_inference_batch_size",
    "Windows per ONNX Runtime call (micro-batch size), by model.",
    ["model"],
    buckets=BATCH_BUCKETS,
)
ACTIVE_STREAMS = Gauge("ser_active_streams", "Open WebSocket streaming sessions.")
STREAM_ERRORS = Counter(
    "ser_stream_errors",
    "WebSocket streams ended by an error, by its code (the JSON error's code; invalid_frame "
    "for frames the WebSocket layer refused: bad UTF-8, over the size limit, bad framing; "
    "ping_flood for connections closed for sending pings faster than they are answered; "
    "frame_flood for frames of any kind past the per-connection frame budget).",
    ["code"],
)
HTTP_EDGE_ERRORS = Counter(
    "ser_http_edge_errors",
    "HTTP connections answered or closed by the server's protocol layer before the app saw a "
    "request, by code (bad_request, header_timeout, headers_too_large, uri_too_long; "
    "idle_timeout for a connection closed before it sent a byte; unread_body for one closed "
    "after an answer given before its request's body arrived).",
    ["code"],
)
WORK_LANE_JOBS = Gauge(
    "ser_work_lane_jobs",
    "/predict decode and feature jobs in a work lane (running or queued), by lane (short, long).",
    ["lane"],
)
WORK_LANE_REFUSALS = Counter(
    "ser_work_lane_refusals",
    "Jobs refused because their work lane was full (answered 503 server_busy), by lane.",
    ["lane"],
)
UPLOAD_BUFFER_BYTES = Gauge(
    "ser_upload_buffer_bytes",
    "Bytes of upload bodies reserved at once (app.api.upload_budget), of SER_UPLOAD_BUFFER_BYTES.",
)
UPLOAD_BUDGET_REFUSALS = Counter(
    "ser_upload_budget_refusals",
    "Uploads refused before their body was read because the upload budget was spent "
    "(answered 503 server_busy).",
)
LANE_MOVES = Counter(
    "ser_work_lane_moves",
    "/predict uploads moved from the short to the long lane, because their header or the "
    "samples they really decoded to passed the short lane's budget.",
)
PREDICTIONS = Counter(
    "ser_predictions",
    "Predictions returned (one per /predict response or classified stream window), by label.",
    ["model", "label"],
)
AUDIO_SECONDS = Counter(
    "ser_audio_seconds",
    "Seconds of decoded audio received, by source (upload or stream).",
    ["source"],
)
MODEL_INFO = Gauge(
    "ser_model_info",
    "1 for each loaded model, with its name, version, active execution provider and default flag.",
    ["model", "name", "version", "provider", "default"],
)
MODELS_READY = Gauge("ser_models_ready", "1 when the service is ready to predict, else 0.")


# The methods a label may name; any other (httptools parses dozens: PROPFIND, MKCOL, SOURCE,
# ...) is "other", so that clients cannot grow the label set.
METHODS: Final[frozenset[str]] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}
)
OTHER_METHOD: Final[str] = "other"


def method_label(method: str) -> str:
    """``method`` when it is one of :data:`METHODS`, else ``"other"``."""
    return method if method in METHODS else OTHER_METHOD


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one HTTP request and record its duration (``method`` folded by
    :func:`method_label`)."""
    labels = (route, method_label(method), str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_REQUEST_SECONDS.labels(*labels).observe(seconds)


def render() -> tuple[bytes, str]:
    """The current metrics in the Prometheus text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
