"""ONNX Runtime sessions and the micro-batcher that feeds them.

:func:`open_session` creates one ``InferenceSession`` with explicit threads and the providers
the settings ask for, then checks which provider it really runs on: onnxruntime falls back to
CPU silently when CUDA cannot start, so the active provider is read back with
``session.get_providers()`` rather than assumed.

:class:`MicroBatcher` owns a session and one worker thread. Callers are worker threads (an
upload's lane thread, a stream's push thread) calling :meth:`MicroBatcher.run_rows`, in one
of three modes (``max_wait_s``):

- ``None`` ("off", the CPU default): the rows run in the calling thread, with the checks below;
- ``0`` ("greedy", the CUDA default): the rows are queued and the caller blocks on a future; the
  batcher's thread takes the first waiting job at once, with every job already queued behind it
  (up to ``max_batch_size`` rows), so a lone request runs without waiting and the requests that
  arrive during a run share the next one;
- ``> 0`` ("window"): as greedy, but the first job waits up to ``max_wait_s`` for others.

A queued batch is ONE ``session.run`` on the stacked rows; each caller's future gets its own
rows. A failing run fails only the jobs in that batch, and
a job whose output rows are not all finite gets an :class:`InferenceError` instead of NaN: the
server validates its input, so a non-finite output is a broken model, never a number to send.
A model whose batches keep failing (:attr:`MicroBatcher.broken`, after ``max_failures`` in a
row, or a batch that got no answer within ``timeout_s``) makes the service unready, so that an
orchestrator stops routing to a replica whose GPU is gone; an error's message never quotes
ONNX Runtime (its words go to the log).

On CUDA: :class:`CudaOptions` sets the device, cuDNN's algorithm search (heuristic: the batch
axis is dynamic, and the default exhaustive search would benchmark every convolution again for
each new batch size) and an optional memory limit. ONNX Runtime prints why CUDA did not start
to the process's stderr, outside the JSON log: session creation on CUDA captures that output
and logs it, and a refusal quotes it with :func:`cuda_diagnosis`'s reading of the libraries.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.metadata
import logging
import os
import queue
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

from app import metrics
from app.contract import INPUT_NAME, OUTPUT_NAME
from app.cuda import cuda_diagnosis

log = logging.getLogger(__name__)

ORT_PROVIDERS: Final[dict[str, str]] = {
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES: Final[dict[str, str]] = {v: k for k, v in ORT_PROVIDERS.items()}


CUDA_PROVIDER: Final[str] = ORT_PROVIDERS["cuda"]
_ANSI: Final[re.Pattern[str]] = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class CudaOptions:
    """The CUDA execution provider's options (``SER_CUDA_DEVICE_ID``,
    ``SER_CUDA_MEM_LIMIT_BYTES``; 0: no limit beyond the device's)."""

    device_id: int = 0
    mem_limit_bytes: int = 0

    def provider_options(self) -> dict[str, str]:
        options = {
            "device_id": str(self.device_id),
            "cudnn_conv_algo_search": "HEURISTIC",
            # Grow the arena by what a run needs, not by doubling: a replica's memory stays
            # near its working set.
            "arena_extend_strategy": "kSameAsRequested",
        }
        if self.mem_limit_bytes:
            options["gpu_mem_limit"] = str(self.mem_limit_bytes)
        return options


def both_runtime_wheels() -> bool:
    """Whether the CPU and the GPU onnxruntime wheels are both installed: they share one
    package folder, and whichever was installed last hides the other's providers."""
    try:
        importlib.metadata.version("onnxruntime")
        importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class ProviderError(RuntimeError):
    """The execution providers the settings ask for cannot run this model here."""


class InferenceError(RuntimeError):
    """ONNX Runtime failed on a batch; every caller in that batch gets this error."""


def requested_providers(preference: tuple[str, ...], available: list[str]) -> list[str]:
    """ONNX Runtime provider names to try, best first.

    ``("auto",)`` means CUDA when this onnxruntime build has it, then CPU. An explicit list
    keeps its order and drops what this build lacks (the caller checks the result).
    """
    names = ["cuda", "cpu"] if preference == ("auto",) else list(preference)
    return [ORT_PROVIDERS[n] for n in names if ORT_PROVIDERS[n] in available]


def _warn_if_cuda_missing(preference: tuple[str, ...], available: list[str]) -> None:
    """Say so when CUDA is asked for (or left to ``auto``) and this build has none."""
    if CUDA_PROVIDER in available:
        return
    clash = both_runtime_wheels()
    if "cuda" not in preference and not clash:
        return  # auto on a CPU install: nothing to report
    why = (
        "the onnxruntime and onnxruntime-gpu wheels are both installed and the CPU one hides "
        "CUDA: pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
        "-r requirements/serve-gpu.txt"
        if clash
        else "this onnxruntime build has no CUDA provider: install requirements/serve-gpu.txt"
    )
    log.warning(
        "CUDA unavailable",
        extra={
            "event": "cuda_unavailable",
            "requested": list(preference),
            "available": available,
            "reason": why,
        },
    )


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: provider fall-back is reported by us
    # Idle ORT threads would otherwise busy-wait after each run, taking the CPU that decoding
    # and feature extraction of the next requests need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(
    path: Path,
    preference: tuple[str, ...],
    intra_op_threads: int,
    inter_op_threads: int,
    cuda: CudaOptions | None = None,
) -> tuple[ort.InferenceSession, str]:
    """Load ``path`` and return the session with the short name of its active provider.

    Raises:
        ProviderError: no asked-for provider is in this onnxruntime build, or the session
            fell back to a provider that was not asked for (e.g. ``SER_PROVIDERS=cuda`` on a
            machine where CUDA does not start).
        onnxruntime errors (RuntimeError subclasses): the file is missing or not ONNX.
    """
    available = ort.get_available_providers()
    _warn_if_cuda_missing(preference, available)
    providers = requested_providers(preference, available)
    if not providers:
        raise ProviderError(
            f"SER_PROVIDERS={','.join(preference)} names no provider this onnxruntime build has "
            f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA, or add cpu"
        )
    options = session_options(intra_op_threads, inter_op_threads)
    with _stderr_captured(enabled=CUDA_PROVIDER in providers) as said:
        session = _create(path, providers, options, cuda or CudaOptions())
    if said():
        log.warning(
            "onnxruntime said",
            extra={"event": "onnxruntime_stderr", "model_path": str(path), "text": said()},
        )
    active = session.get_providers()[0]
    cuda_failed = providers[0] == CUDA_PROVIDER and active != CUDA_PROVIDER
    cause = _cuda_cause(said()) if cuda_failed else ""
    if preference != ("auto",) and active not in providers:
        raise ProviderError(
            f"asked for {', '.join(providers)} but the session runs on {active}: CUDA did not "
            f"start ({cause}); or set SER_PROVIDERS=cuda,cpu to allow CPU"
        )
    if active != providers[0]:
        log.warning(
            "provider fell back",
            extra={
                "event": "provider_fallback",
                "model_path": str(path),
                "requested": providers,
                "active": active,
                "reason": cause,
            },
        )
    return session, SHORT_NAMES.get(active, active)


def _cuda_cause(onnxruntime_said: str) -> str:
    """ONNX Runtime's last words on CUDA (the real cause, when it printed one), and what the
    libraries say."""
    plain = _ANSI.sub("", onnxruntime_said)  # its log lines come coloured
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    quoted = f"onnxruntime: {lines[-1][-300:]}; " if lines else ""
    return quoted + cuda_diagnosis()


@contextlib.contextmanager
def _stderr_captured(enabled: bool) -> Iterator[Callable[[], str]]:
    """What the process writes to file descriptor 2 meanwhile (ONNX Runtime's C++ logging
    goes there, not through Python): ``said()`` returns it after the block."""
    captured: list[str] = []
    if not enabled:
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: "".join(captured)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read(64 * 1024).decode("utf-8", "replace"))


def _create(
    path: Path, providers: list[str], options: ort.SessionOptions, cuda: CudaOptions
) -> ort.InferenceSession:
    """An InferenceSession; when a GPU provider raises at creation and CPU was also asked for,
    retry on CPU alone (the active provider check then reports it)."""
    cpu = ORT_PROVIDERS["cpu"]
    with_options: list[str | tuple[str, dict[str, str]]] = [
        (name, cuda.provider_options()) if name == CUDA_PROVIDER else name for name in providers
    ]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=with_options)
    except Exception as e:  # onnxruntime raises bare Exception subclasses
        if providers[0] == cpu or cpu not in providers:
            raise
        log.warning(
            "provider failed, retrying on CPU",
            extra={
                "event": "provider_error",
                "model_path": str(path),
                "requested": providers,
                "error": f"{type(e).__name__}: {e}",
            },
        )
        return ort.InferenceSession(str(path), sess_options=options, providers=[cpu])


def run_session(session: ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    """One ``session.run``: features (n, n_mels, frames) float32 -> logits (n, n_labels)."""
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: features})
    return np.asarray(logits, dtype=np.float32)


@dataclass
class _Job:
    features: np.ndarray  # (n, n_mels, frames)
    # A thread-safe future: the batcher's thread resolves it; coroutines await it wrapped.
    future: concurrent.futures.Future[np.ndarray]


_STOP: Final = object()


class MicroBatcher:
    """Batch concurrent ``submit`` calls into single runs of ``run`` on a worker thread.

    Args:
        run: the batched computation, (n, ...) float32 -> (n, ...) (usually :func:`run_session`).
        name: the model key, used as the metrics label and in the thread name.
        max_batch_size: the most rows per run; larger submissions are split by the caller.
        max_wait_s: how long the first job of a batch may wait for others to join it; 0: none
            (greedy: it runs with what is queued already); None: no queue, each caller's rows
            run in its own thread.
        max_failures: failed batches in a row after which the model is :attr:`broken`.
        timeout_s: the longest a caller waits for a queued batch (a hung GPU); a batch that
            times out counts as failed.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        name: str,
        max_batch_size: int,
        max_wait_s: float | None,
        max_failures: int = 5,
        timeout_s: float = 30.0,
    ) -> None:
        if (max_wait_s is not None and max_wait_s < 0) or max_batch_size < 1 or timeout_s <= 0:
            raise ValueError("max_batch_size must be >= 1, max_wait_s None or >= 0, timeout_s > 0")
        if max_failures < 1:
            raise ValueError("max_failures must be >= 1")
        self._run = run
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_failures = max_failures
        self.timeout_s = timeout_s
        self._failures = 0  # failed batches in a row
        self.broken: str | None = None  # why the model stopped working, once it has
        self._queue: queue.Queue[_Job | object] = queue.Queue()
        self._carry: _Job | None = None  # a job that did not fit the previous batch
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def mode(self) -> str:
        """``off``, ``greedy`` or ``window`` (the module's docstring)."""
        if self.max_wait_s is None:
            return "off"
        return "greedy" if self.max_wait_s == 0 else "window"

    def enqueue(self, features: np.ndarray) -> concurrent.futures.Future[np.ndarray]:
        """Queue ``features`` (n <= max_batch_size rows) for a batch; the future gets its n
        output rows."""
        job = self._job(features)
        if not self._thread.is_alive():
            raise InferenceError(f"the {self.name} model is shut down")
        with self._closing:
            if self._closed:
                raise InferenceError(f"the {self.name} model is shut down")
            self._queue.put(job)
        return job.future

    def _job(self, features: np.ndarray) -> _Job:
        if not 1 <= features.shape[0] <= self.max_batch_size:
            raise ValueError(f"submit 1 to {self.max_batch_size} rows, got {features.shape[0]}")
        if self._closed:
            raise InferenceError(f"the {self.name} model is shut down")
        future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        return _Job(np.ascontiguousarray(features, dtype=np.float32), future)

    def run_rows(self, features: np.ndarray) -> np.ndarray:
        """Run ``features`` (n <= max_batch_size rows) in a batch; returns its n output rows.
        Blocks the calling thread (a worker's, not the event loop's) until they are done.

        With batching off (the CPU default) the rows run in the calling thread: a queue hop to
        the batcher's thread would only add its latency, and callers on different threads then
        run at once, one ONNX Runtime thread each, instead of taking turns on one.
        """
        if self.max_wait_s is not None:
            future = self.enqueue(features)
            try:
                return future.result(timeout=self.timeout_s)
            except concurrent.futures.TimeoutError:
                future.cancel()
                self._failed(f"no answer within {self.timeout_s:g} s")
                raise InferenceError(
                    f"the {self.name} model gave no answer within {self.timeout_s:g} s"
                ) from None
        job = self._job(features)
        self._run_batch([job])
        return job.future.result()

    def warm_up(self, example: np.ndarray) -> list[int]:
        """Run every batch size from 1 to ``max_batch_size`` once, through the batcher's own
        path (its thread, when batches are queued), so that a provider that prepares per input
        shape (cuDNN's algorithm choice, CUDA memory) does it before the first request instead
        of during it. ``example``: one row. Returns the sizes run."""
        sizes = list(range(1, self.max_batch_size + 1))
        for n in sizes:
            self.run_rows(np.repeat(example[None], n, axis=0))
        return sizes

    def _failed(self, why: str) -> None:
        """Count a failed batch; after ``max_failures`` in a row the model is broken."""
        self._failures += 1
        if self._failures >= self.max_failures and self.broken is None:
            self.broken = f"the {self.name} model failed {self._failures} batches in a row ({why})"
            log.error(
                "model broken",
                extra={"event": "model_broken", "model": self.name, "reason": self.broken},
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish the queued jobs, then stop the worker thread.

        Nothing is queued after the stop, and a job the thread did not reach in ``timeout_s``
        fails, so no caller (a blocked lane thread included) waits forever.
        """
        with self._closing:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout_s)
        error = InferenceError(f"the {self.name} model is shut down")
        while not self._thread.is_alive() and (job := self._next_job(0.0)) is not None:
            if isinstance(job, _Job):
                _deliver(job, None, error)

    def _next_job(self, timeout_s: float | None) -> _Job | object | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """Jobs for one batch, starting with ``first``; also whether a stop was requested."""
        batch, rows = [first], first.features.shape[0]
        deadline = time.monotonic() + (self.max_wait_s or 0.0)
        while rows < self.max_batch_size:
            job = self._next_job(max(0.0, deadline - time.monotonic()))
            if job is None:
                break
            if job is _STOP:
                return batch, True
            assert isinstance(job, _Job)
            if rows + job.features.shape[0] > self.max_batch_size:
                self._carry = job
                break
            batch.append(job)
            rows += job.features.shape[0]
        return batch, False

    def _work(self) -> None:
        stopping = False
        while not stopping or self._carry is not None:
            first = self._next_job(None if not stopping else 0.0)
            if first is None:
                break
            if first is _STOP:
                stopping = True
                continue
            assert isinstance(first, _Job)
            batch, stop_now = self._collect(first)
            stopping = stopping or stop_now
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        # One job (the usual case with batching off) runs on its own array, uncopied.
        stacked = (
            batch[0].features
            if len(batch) == 1
            else np.concatenate([job.features for job in batch], axis=0)
        )
        started = time.perf_counter()
        try:
            outputs = self._run(stacked)
        except Exception as e:  # any ORT failure: fail this batch's callers, keep serving
            log.exception(
                "inference failed",
                extra={"event": "inference_error", "model": self.name, "rows": len(stacked)},
            )
            self._failed(type(e).__name__)
            # The engine's own words (paths, host names) go to the log above, not to clients.
            error = InferenceError(
                f"inference failed on a batch of {len(stacked)} rows; the server logged why"
            )
            for job in batch:
                _deliver(job, None, error)
            return
        metrics.INFERENCE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(self.name).observe(len(stacked))
        finite = np.isfinite(outputs).all(axis=1)  # per row, once for the batch and its jobs
        if finite.all():
            self._failures = 0
        else:
            self._failed("non-finite outputs")
        offset = 0
        for job in batch:
            n = job.features.shape[0]
            rows = outputs[offset : offset + n]
            job_finite = finite[offset : offset + n].all()
            offset += n
            if job_finite:
                _deliver(job, rows, None)
                continue
            log.error(
                "non-finite model output",
                extra={"event": "inference_error", "model": self.name, "rows": n},
            )
            _deliver(job, None, InferenceError(f"the {self.name} model gave non-finite outputs"))


def _deliver(job: _Job, result: np.ndarray | None, error: Exception | None) -> None:
    # A cancelled future (its request went away) takes no result: nobody is waiting.
    if not job.future.set_running_or_notify_cancel():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)  # type: ignore[arg-type]
