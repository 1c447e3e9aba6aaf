"""Service settings: one typed object, read from ``SER_*`` environment variables.

Every field can be set as ``SER_<FIELD>`` (e.g. ``SER_MODELS_DIR=/srv/models``,
``SER_PROVIDERS=cuda,cpu``). Invalid values stop the server at start-up with a message that
names the variable, never at the first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.audio import DEFAULT_MAX_DECODED_SAMPLES
from app.contract import Loss
from app.cpus import usable_cpus

REPO_MODELS_DIR: Final[Path] = Path(__file__).resolve().parent.parent / "models"
PROVIDER_NAMES: Final[tuple[str, ...]] = ("cuda", "cpu")
LogLevel = Literal["debug", "info", "warning", "error"]
LONG_LANE_SAMPLES: Final[int] = 30 * 48_000 * 2  # 30 s of 48 kHz stereo
MULTIPART_OVERHEAD_BYTES: Final[int] = 64 * 1024  # boundaries and part headers around a file
BatchingMode = Literal["off", "greedy", "window"]
# The micro-batcher's mode per execution provider (app/engine.py). On the CPU a batch of 16 runs
# no faster per row than 16 runs of one (docs/performance.md): callers run their own rows at
# once, on their own threads. On a GPU a batch costs about what one row does: runs go one at a
# time, a lone request at once, and what queued during a run joins the next one.
DEFAULT_BATCHING: Final[dict[str, BatchingMode]] = {"cpu": "off", "cuda": "greedy"}
DEFAULT_WINDOW_MS: Final[float] = 5.0


def _one_per_cpu() -> int:
    return usable_cpus()


def _default_intra_op_threads() -> int:
    # Half the CPUs, at most 4: the other half decode, featurise and serve HTTP. On 2 cores one
    # ORT thread beat two in one benchmark run (2026-11-25): /predict p50 6.6 vs 7.2 ms, streams
    # 5.2 vs 6.0 ms of server CPU per window; a second thread mostly waits to be woken per op.
    return max(1, min(4, usable_cpus() // 2))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SER_", extra="ignore", frozen=True)

    # Models and execution.
    models_dir: Path = REPO_MODELS_DIR
    default_model: Loss | None = None  # None: the best by validation metric, else "ce"
    providers: str = "auto"  # "auto", or a comma list of cuda / cpu in order of preference
    intra_op_threads: int = Field(default_factory=_default_intra_op_threads, ge=1, le=256)
    inter_op_threads: int = Field(default=1, ge=1, le=64)

    # Micro-batching. batching None: DEFAULT_BATCHING for the provider the model runs on, or
    # "window" where only max_batch_wait_ms is set (how it was chosen before the modes).
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    batching: BatchingMode | None = None
    max_batch_wait_ms: float | None = Field(default=None, ge=0.0, le=1000.0)  # window mode
    # A model whose batches fail this many times in a row, or whose queued batch gets no answer
    # within inference_timeout_s, makes the service unready (/readyz 503): a GPU fault.
    max_inference_failures: int = Field(default=5, ge=1)
    inference_timeout_s: float = Field(default=30.0, gt=0.0)
    # The CUDA execution provider: which device, and a memory limit (0: the device's).
    cuda_device_id: int = Field(default=0, ge=0)
    cuda_mem_limit_bytes: int = Field(default=0, ge=0)

    # /predict limits.
    max_upload_bytes: int = Field(default=20_000_000, ge=1024)
    # Upload bodies held at once by the process (app.api.upload_budget); past it, 503 before
    # reading. At least one max-size multipart upload (checked below), whose boundaries and part
    # headers may add MULTIPART_OVERHEAD_BYTES to the file.
    upload_buffer_bytes: int = Field(default=128_000_000, ge=1024)
    max_audio_s: float = Field(default=600.0, gt=0.0)
    min_audio_s: float = Field(default=0.1, ge=0.0)
    segment_hop_s: float | None = Field(default=None, gt=0.0)  # None: half the model window
    # Speech gate (app/vad.py), uploads and streams: a 32 ms frame is speech from this
    # probability of the voice-activity detector on (Silero's default, 0.5).
    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    # Decoded size (frames x channels) a /predict upload may reach, judged from its header.
    max_decoded_samples: int = Field(default=DEFAULT_MAX_DECODED_SAMPLES, ge=1)
    # Seconds opening an upload and reading its header may take (done in a work lane): legit
    # headers take milliseconds; files padded with millions of empty chunks or atoms take
    # seconds and are refused (422) instead of being decoded.
    max_header_s: float = Field(default=1.0, gt=0.0)

    # /predict decode + feature work: two bounded thread pools ("lanes"). Uploads that decode to
    # more than long_lane_samples (by their header, or by what the short lane really decoded
    # before moving them) run in the long lane, so short clips never queue behind them.
    # A lane whose threads are busy and whose queue is full answers 503 with Retry-After.
    work_threads: int = Field(default_factory=_one_per_cpu, ge=1, le=256)
    work_queue_limit: int = Field(default=64, ge=0)
    long_work_threads: int = Field(default=1, ge=1, le=256)
    long_work_queue_limit: int = Field(default=4, ge=0)
    long_lane_samples: int = Field(default=LONG_LANE_SAMPLES, ge=1)

    # WebSocket streaming limits.
    stream_max_sessions: int = Field(default=16, ge=1)
    # Threads that run every session's chunks (resampling, features, inference); a session has
    # one chunk in flight at a time. More threads than CPUs only fight over the GIL: on 2 cores,
    # 125 real-time sessions had a p99 of 56-66 ms on 2 threads, 110-163 ms on asyncio's
    # default pool of 6.
    stream_threads: int = Field(default_factory=_one_per_cpu, ge=1, le=256)
    stream_max_frame_bytes: int = Field(default=256 * 1024, ge=1024)
    stream_idle_timeout_s: float = Field(default=30.0, gt=0.0)
    # A started session must carry audio at this share of real time on average once
    # stream_min_audio_grace_s has passed (0: no rule), or it is closed (audio_too_slow).
    stream_min_audio_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    stream_min_audio_grace_s: float = Field(default=10.0, ge=0.0)
    stream_max_session_s: float = Field(default=3600.0, gt=0.0)
    stream_hop_s: float = Field(default=0.5, gt=0.0)
    # WebSocket admission: a slot is taken only by a valid start, which must come in time;
    # per client (the address uvicorn resolves from X-Forwarded-For): open connections and
    # connection attempts in a sliding window; text frames are small JSON control messages.
    stream_start_timeout_s: float = Field(default=5.0, gt=0.0)
    stream_max_sessions_per_client: int = Field(default=4, ge=1)
    stream_max_connects_per_client: int = Field(default=30, ge=1)
    stream_connect_window_s: float = Field(default=60.0, gt=0.0)
    stream_max_control_bytes: int = Field(default=4096, ge=256)

    # HTTP edges (uvicorn reached directly): request line and headers must arrive within
    # http_header_timeout_s and stay under http_max_header_bytes; idle keep-alive connections
    # close after http_keep_alive_s; an upload body must arrive within upload_timeout_s and,
    # after upload_rate_grace_s, at upload_min_rate_bytes_s on average (0: no rate rule).
    http_header_timeout_s: float = Field(default=10.0, gt=0.0)
    http_max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    http_keep_alive_s: int = Field(default=5, ge=1)
    upload_timeout_s: float = Field(default=120.0, gt=0.0)
    upload_min_rate_bytes_s: int = Field(default=8192, ge=0)
    upload_rate_grace_s: float = Field(default=5.0, ge=0.0)

    # Browsers (app.api.security): origins besides the service's own that may open /ws/stream
    # (comma list of scheme://host[:port]), and the host names the service answers to ("*": any).
    allowed_origins: str = ""
    allowed_hosts: str = "*"

    # Logging.
    log_level: LogLevel = "info"
    log_json: bool = True

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, value: str) -> str:
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        if names == ["auto"]:
            return "auto"
        unknown = [n for n in names if n not in PROVIDER_NAMES]
        if not names or unknown:
            allowed = ", ".join(PROVIDER_NAMES)
            raise ValueError(
                f"SER_PROVIDERS={value!r}: use 'auto' or a comma list of {allowed} in order of "
                "preference, e.g. 'cuda,cpu'"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"SER_PROVIDERS={value!r} names a provider twice")
        return ",".join(names)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.min_audio_s >= self.max_audio_s:
            raise ValueError("SER_MIN_AUDIO_S must be below SER_MAX_AUDIO_S")
        if self.stream_hop_s > self.stream_max_session_s:
            raise ValueError("SER_STREAM_HOP_S must not exceed SER_STREAM_MAX_SESSION_S")
        if self.upload_buffer_bytes < self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES:
            raise ValueError(
                "SER_UPLOAD_BUFFER_BYTES must hold one upload of SER_MAX_UPLOAD_BYTES "
                f"and its multipart framing ({MULTIPART_OVERHEAD_BYTES} bytes)"
            )
        return self

    @property
    def allowed_origin_set(self) -> frozenset[str]:
        return frozenset(
            o.strip().lower().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()
        )

    @property
    def allowed_host_set(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip())

    @property
    def provider_preference(self) -> tuple[str, ...]:
        """The providers asked for, best first; ``("auto",)`` when left to the server."""
        return tuple(self.providers.split(","))

    def batching_mode(self, provider: str) -> BatchingMode:
        """The micro-batcher's mode for a model on ``provider`` (``cpu``, ``cuda``, ...)."""
        if self.batching is not None:
            return self.batching
        if self.max_batch_wait_ms is not None:
            return "window" if self.max_batch_wait_ms > 0 else "off"
        return DEFAULT_BATCHING.get(provider, DEFAULT_BATCHING["cuda"])

    def batch_wait_s(self, provider: str) -> float | None:
        """``MicroBatcher``'s ``max_wait_s`` for a model on ``provider``: None (off), 0
        (greedy) or the window in seconds."""
        mode = self.batching_mode(provider)
        if mode == "off":
            return None
        if mode == "greedy":
            return 0.0
        window_ms = DEFAULT_WINDOW_MS if self.max_batch_wait_ms is None else self.max_batch_wait_ms
        return window_ms / 1000.0
