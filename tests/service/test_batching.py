"""The micro-batcher: concurrent callers share one session.run, failures stay in their batch."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from app.engine import InferenceError, MicroBatcher
from app.main import create_app
from app.settings import Settings
from tests.conftest import synth_speechlike, wav_bytes


class Recorder:
    """A fake model: returns row sums, records batch sizes, can be slow or fail."""

    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.fail_on = fail_on

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(x.shape[0])
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail_on is not None and np.any(x[:, 0, 0] == self.fail_on):
            raise RuntimeError("boom")
        return x.sum(axis=(1, 2))[:, None].repeat(8, axis=1)


def rows(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 2, 3), value, dtype=np.float32)


def submit(batcher: MicroBatcher, features: np.ndarray) -> asyncio.Future[np.ndarray]:
    """Queue rows from the event loop (the server's callers are threads: run_rows)."""
    return asyncio.wrap_future(batcher.enqueue(features))


async def test_concurrent_submits_share_a_batch() -> None:
    fake = Recorder(delay_s=0.02)
    batcher = MicroBatcher(fake, "t", max_batch_size=8, max_wait_s=0.05)
    try:
        results = await asyncio.gather(*(submit(batcher, rows(float(i))) for i in range(8)))
    finally:
        batcher.close()
    for i, out in enumerate(results):  # each caller gets its own row back
        assert out.shape == (1, 8) and out[0, 0] == pytest.approx(6.0 * i)
    assert sum(fake.batches) == 8 and max(fake.batches) > 1
    assert all(size <= 8 for size in fake.batches)
    assert fake.threads == {"batcher-t"}


async def test_batches_never_exceed_max_size() -> None:
    fake = Recorder()
    batcher = MicroBatcher(fake, "t", max_batch_size=4, max_wait_s=0.05)
    try:
        sizes = [3, 2, 1, 4, 2]
        results = await asyncio.gather(*(submit(batcher, rows(1.0, n)) for n in sizes))
    finally:
        batcher.close()
    assert [r.shape[0] for r in results] == sizes
    assert max(fake.batches) <= 4 and sum(fake.batches) == sum(sizes)
    with pytest.raises(ValueError, match="1 to 4 rows"):
        await submit(batcher, rows(1.0, 5))


async def test_a_failing_batch_fails_only_its_callers() -> None:
    fake = Recorder(fail_on=13.0)
    batcher = MicroBatcher(fake, "t", max_batch_size=2, max_wait_s=0.0)
    try:
        with pytest.raises(InferenceError, match="inference failed"):
            await submit(batcher, rows(13.0))
        out = await submit(batcher, rows(2.0))  # the worker survived
    finally:
        batcher.close()
    assert out[0, 0] == pytest.approx(12.0)


async def test_the_event_loop_keeps_running_during_inference() -> None:
    batcher = MicroBatcher(Recorder(delay_s=0.3), "t", max_batch_size=1, max_wait_s=0.0)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await submit(batcher, rows(1.0))
    finally:
        ticker.cancel()
        batcher.close()
    assert ticks >= 10


def batch_counts(model: str) -> tuple[float, float]:
    """(batches, batches of one row) seen so far by the batch-size histogram."""
    count = REGISTRY.get_sample_value("ser_inference_batch_size_count", {"model": model}) or 0.0
    ones = (
        REGISTRY.get_sample_value("ser_inference_batch_size_bucket", {"model": model, "le": "1.0"})
        or 0.0
    )
    return count, ones


async def test_concurrent_requests_are_micro_batched(models_dir: Path) -> None:
    # A generous wait: on a busy CI machine the 8 decodes finish far apart.
    app = create_app(Settings(models_dir=models_dir, max_batch_wait_ms=500, max_batch_size=16))
    data = wav_bytes(synth_speechlike(2.0, 16_000), 16_000)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        before, before_ones = batch_counts("ce")
        responses = await asyncio.gather(
            *(
                client.post(
                    "/predict?model=ce", content=data, headers={"content-type": "audio/wav"}
                )
                for _ in range(8)
            )
        )
        after, after_ones = batch_counts("ce")
    assert [r.status_code for r in responses] == [200] * 8
    assert len({tuple(r.json()["probabilities"].values()) for r in responses}) == 1
    batches, single = after - before, after_ones - before_ones
    assert batches < 8 and batches - single >= 1  # at least one batch held more than one row


def test_a_failing_inference_is_a_json_500(make_client, monkeypatch) -> None:
    client = make_client()
    model = client.app.state.registry.get("ce")

    def broken(features: np.ndarray) -> np.ndarray:
        raise RuntimeError("the GPU fell over")

    monkeypatch.setattr(model.batcher, "_run", broken)
    data = wav_bytes(synth_speechlike(1.0, 16_000), 16_000)
    response = client.post("/predict?model=ce", files={"file": ("a.wav", data)})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "inference_failed"
    ok = client.post("/predict?model=bce", files={"file": ("a.wav", data)})
    assert ok.status_code == 200  # the other model, and the process, carry on


async def test_worker_threads_and_coroutines_share_batches() -> None:
    fake = Recorder(delay_s=0.02)
    batcher = MicroBatcher(fake, "t", max_batch_size=8, max_wait_s=0.05)
    try:
        in_thread = asyncio.to_thread(batcher.run_rows, rows(1.0, 3))
        on_loop = submit(batcher, rows(2.0, 2))
        from_thread, from_loop = await asyncio.gather(in_thread, on_loop)
    finally:
        batcher.close()
    assert from_thread.shape == (3, 8) and from_thread[0, 0] == pytest.approx(6.0)
    assert from_loop.shape == (2, 8) and from_loop[0, 0] == pytest.approx(12.0)
    assert sorted(fake.batches) in ([5], [2, 3])


@pytest.mark.parametrize("wait_s", [None, 0.0, 0.05])
def test_a_closed_batcher_refuses_instead_of_leaving_a_thread_waiting(wait_s) -> None:
    batcher = MicroBatcher(Recorder(), "t", max_batch_size=4, max_wait_s=wait_s)
    assert batcher.run_rows(rows(1.0)).shape == (1, 8)
    batcher.close()
    with pytest.raises(InferenceError, match="shut down"):
        batcher.run_rows(rows(1.0))


def test_batching_defaults_to_the_provider_and_explicit_settings_win() -> None:
    # Off on the CPU (batches cost per row what single runs do), greedy on CUDA.
    assert Settings().batch_wait_s("cpu") is None and Settings().batching_mode("cpu") == "off"
    assert Settings().batch_wait_s("cuda") == 0.0 and Settings().batching_mode("cuda") == "greedy"
    assert Settings(batching="window").batch_wait_s("cpu") == 0.005  # the default window
    assert Settings(batching="window", max_batch_wait_ms=2).batch_wait_s("cuda") == 0.002
    assert Settings(batching="greedy", max_batch_wait_ms=7).batch_wait_s("cpu") == 0.0
    assert Settings(batching="off").batch_wait_s("cuda") is None
    # A wait alone (the setting before the modes) still means a window, and 0 no batching.
    assert Settings(max_batch_wait_ms=2).batch_wait_s("cpu") == 0.002
    assert Settings(max_batch_wait_ms=0).batch_wait_s("cuda") is None


def test_an_unknown_batching_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SER_BATCHING", "eager")
    with pytest.raises(ValueError, match=r"off.*greedy.*window"):
        Settings()


def test_a_cpu_model_runs_unbatched_and_says_so(make_client) -> None:
    client = make_client()
    model = client.app.state.registry.get("ce")
    assert model.provider == "cpu" and model.batcher.mode == "off"
    listed = {m["key"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["ce"]["batching"] == {"mode": "off", "max_batch_size": 16, "max_wait_ms": None}


def test_greedy_runs_a_lone_job_at_once_and_batches_what_queued_meanwhile() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        started.set()
        release.wait(10)
        return x.sum(axis=(1, 2))[:, None].repeat(8, axis=1)

    batcher = MicroBatcher(run, "t", max_batch_size=8, max_wait_s=0.0)
    assert batcher.mode == "greedy"
    try:
        first = batcher.enqueue(rows(1.0))
        assert started.wait(5)  # nothing else is queued and it did not wait for company
        rest = [batcher.enqueue(rows(float(i), 2)) for i in range(3)]  # queued during the run
        release.set()
        assert first.result(5)[0, 0] == pytest.approx(6.0)
        assert [f.result(5).shape for f in rest] == [(2, 8)] * 3
    finally:
        release.set()
        batcher.close()
    assert seen == [1, 6]  # the three that queued during the first run went in one batch


def test_a_window_holds_a_lone_job_back_for_company() -> None:
    seen: list[float] = []

    def run(x: np.ndarray) -> np.ndarray:
        seen.append(time.monotonic())
        return np.zeros((len(x), 8), np.float32)

    batcher = MicroBatcher(run, "t", max_batch_size=8, max_wait_s=0.3)
    assert batcher.mode == "window"
    try:
        queued = time.monotonic()
        batcher.run_rows(rows(1.0))
    finally:
        batcher.close()
    assert seen[0] - queued >= 0.3  # the window's length, all of it: nobody else came


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 2), (8, 4), (64, 4)])
def test_onnx_runtime_takes_half_the_usable_cpus_by_default(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.setattr("app.settings.usable_cpus", lambda: cores)
    assert Settings().intra_op_threads == threads
    assert Settings().work_threads == Settings().stream_threads == cores
    assert Settings(intra_op_threads=3).intra_op_threads == 3


def test_with_batching_off_rows_run_in_the_calling_thread_with_the_same_checks() -> None:
    fake = Recorder(fail_on=13.0)
    batcher = MicroBatcher(fake, "t", max_batch_size=4, max_wait_s=None)
    try:
        out = batcher.run_rows(rows(2.0, 3))
        assert out.shape == (3, 8) and out[0, 0] == pytest.approx(12.0)
        assert fake.threads == {threading.current_thread().name}  # no hop to the batcher
        with pytest.raises(InferenceError, match="inference failed"):
            batcher.run_rows(rows(13.0))
        with pytest.raises(ValueError, match="submit 1 to 4 rows"):
            batcher.run_rows(rows(1.0, 5))
        nan = MicroBatcher(lambda x: np.full((len(x), 8), np.nan), "n", 4, None)
        with pytest.raises(InferenceError, match="non-finite"):
            nan.run_rows(rows(1.0))
        nan.close()
    finally:
        batcher.close()
