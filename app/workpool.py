"""Bounded thread pools for the CPU-bound work: ``/predict``'s decoding and features, and the
chunks of live streams.

A :class:`WorkLane` is a fixed number of threads plus a bounded queue: a job submitted while
every thread is busy and the queue is full is refused at once with :class:`LaneFullError`
(the API answers 503 with ``Retry-After``) instead of waiting behind an unbounded backlog.
A job counts against its lane from submission until its thread finishes it, even when the
request that submitted it has gone away, so the bound holds on the real work.

:class:`WorkPools` holds three lanes: uploads whose decoded size (frames x channels) is above
``long_lane_samples`` run in the long lane, everything else in the short lane, so a 3.5 s clip
never queues behind a handful of 10-minute uploads. The size is what is really decoded, not
what a header claims: every upload starts in the short lane, which decodes at most
``long_lane_samples`` of it before moving it (:func:`app.prediction.predict_clip`). Stream
chunks run in the stream lane, a few threads for every session instead of asyncio's default
pool, whose extra threads only contend for the GIL.

Each lane publishes its jobs (``ser_work_lane_jobs``) and its refusals
(``ser_work_lane_refusals_total``) in :mod:`app.metrics`. The app's lifespan makes the pools
and closes them at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from app import metrics
from app.settings import Settings

T = TypeVar("T")
SHORT_RETRY_AFTER_S: Final[int] = 1
LONG_RETRY_AFTER_S: Final[int] = 10  # a long job holds its thread for seconds


class LaneFullError(RuntimeError):
    """Every thread of a lane is busy and its queue is full: try again later."""

    def __init__(self, lane: str, retry_after_s: int) -> None:
        super().__init__(f"the server is busy ({lane} lane full): retry in {retry_after_s} s")
        self.lane = lane
        self.retry_after_s = retry_after_s


class WorkLane:
    """``threads`` worker threads and room for ``queue_limit`` waiting jobs."""

    def __init__(self, name: str, threads: int, queue_limit: int, retry_after_s: int) -> None:
        if threads < 1 or queue_limit < 0:
            raise ValueError("a lane needs threads >= 1 and queue_limit >= 0")
        self.name = name
        self.capacity = threads + queue_limit
        self.retry_after_s = retry_after_s
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"work-{name}"
        )
        self._lock = threading.Lock()
        self._jobs = 0  # submitted and not yet finished (running or queued)
        self._jobs_gauge = metrics.WORK_LANE_JOBS.labels(lane=name)
        self._refusals = metrics.WORK_LANE_REFUSALS.labels(lane=name)

    @property
    def jobs(self) -> int:
        return self._jobs

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on one of the lane's threads.

        Raises:
            LaneFullError: the lane holds ``capacity`` jobs already.
        """
        with self._lock:
            if self._jobs >= self.capacity:
                self._refusals.inc()
                raise LaneFullError(self.name, self.retry_after_s)
            self._jobs += 1
            self._jobs_gauge.inc()
        try:
            future = self._executor.submit(functools.partial(fn, *args))
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: concurrent.futures.Future[T] | None) -> None:
        with self._lock:
            self._jobs -= 1
            self._jobs_gauge.dec()

    def close(self) -> None:
        """Drop the queued jobs and wait for the running ones (each is one bounded upload)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class WorkPools:
    short: WorkLane
    long: WorkLane
    long_lane_samples: int
    # Streams' chunks. Room for one job per admitted session, the most there can be (a session
    # waits for its chunk before it reads the next), so it never refuses one.
    stream: WorkLane

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkPools:
        return cls(
            WorkLane(
                "short", settings.work_threads, settings.work_queue_limit, SHORT_RETRY_AFTER_S
            ),
            WorkLane(
                "long",
                settings.long_work_threads,
                settings.long_work_queue_limit,
                LONG_RETRY_AFTER_S,
            ),
            settings.long_lane_samples,
            WorkLane(
                "stream", settings.stream_threads, settings.stream_max_sessions, SHORT_RETRY_AFTER_S
            ),
        )

    def close(self) -> None:
        """Close every lane; their threads have ended when this returns."""
        self.short.close()
        self.long.close()
        self.stream.close()
