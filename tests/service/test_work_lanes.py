"""Bounded work lanes (503 + Retry-After when full, short clips beside long ones), non-finite
model outputs as errors, and the small hardening items: echoed names, warnings in the log."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.engine import InferenceError, MicroBatcher
from app.logs import configure_logging
from app.main import create_app
from app.settings import Settings
from app.workpool import LaneFullError, WorkLane, WorkPools
from tests.conftest import synth_speechlike, wav_bytes
from tests.service.conftest import occupy

RATE = 16_000


def submit(batcher: MicroBatcher, features: np.ndarray) -> asyncio.Future[np.ndarray]:
    """Queue rows from the event loop (the server's callers are threads: run_rows)."""
    return asyncio.wrap_future(batcher.enqueue(features))


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event the blocking jobs wait on; set at the end so no thread is left hanging."""
    event = threading.Event()
    yield event
    event.set()


async def test_a_full_lane_refuses_at_once_and_recovers(gate: threading.Event) -> None:
    lane = WorkLane("test", threads=1, queue_limit=1, retry_after_s=3)
    running = asyncio.ensure_future(lane.run(gate.wait, 10.0))
    queued = asyncio.ensure_future(lane.run(lambda: "queued"))
    await asyncio.sleep(0.05)
    with pytest.raises(LaneFullError) as refused:
        await lane.run(lambda: "refused")
    assert refused.value.retry_after_s == 3 and lane.jobs == 2
    gate.set()
    assert await running is True and await queued == "queued"
    assert lane.jobs == 0
    lane.close()


async def test_a_cancelled_caller_keeps_its_slot_until_the_work_ends(gate: threading.Event) -> None:
    """The bound is on real work: a request that went away does not free a busy thread."""
    lane = WorkLane("test", threads=1, queue_limit=0, retry_after_s=1)
    caller = asyncio.ensure_future(lane.run(gate.wait, 10.0))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.sleep(0.05)
    with pytest.raises(LaneFullError):
        await lane.run(lambda: None)
    gate.set()
    for _ in range(100):
        if lane.jobs == 0:
            break
        await asyncio.sleep(0.01)
    assert await lane.run(lambda: "free") == "free"
    lane.close()


def pools_of(client: TestClient) -> WorkPools:
    pools: WorkPools = client.app.state.work_pools  # type: ignore[attr-defined]
    return pools


def post(client: TestClient, seconds: float) -> httpx.Response:
    data = wav_bytes(synth_speechlike(seconds, RATE), RATE)
    return client.post("/predict", content=data, headers={"content-type": "audio/wav"})


def test_a_full_lane_is_a_json_503_with_retry_after(make_client, gate: threading.Event) -> None:
    client = make_client(work_threads=1, work_queue_limit=1)
    occupy(client, pools_of(client).short, gate)
    response = post(client, 1.0)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "server_busy"
    assert client.get("/healthz").status_code == 200
    gate.set()
    for _ in range(200):
        if pools_of(client).short.jobs == 0:
            break
        threading.Event().wait(0.01)
    assert post(client, 1.0).status_code == 200


def test_short_clips_pass_while_the_long_lane_is_full(make_client, gate: threading.Event) -> None:
    client = make_client(long_lane_samples=2 * RATE, long_work_threads=1, long_work_queue_limit=0)
    occupy(client, pools_of(client).long, gate)
    long = post(client, 3.0)  # 48,000 samples: the long lane, which is full
    assert long.status_code == 503 and long.headers["retry-after"] == "10"
    assert post(client, 1.5).status_code == 200


def lane_metric(client: TestClient, name: str, lane: str) -> float:
    """The value of the sample ``name`` for ``lane`` in the app's ``/metrics``."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("lane") == lane:
                return float(sample.value)
    return 0.0


def test_lane_metrics_count_jobs_and_refusals(make_client, gate: threading.Event) -> None:
    client = make_client(work_threads=1, work_queue_limit=1)
    short = pools_of(client).short
    jobs_before = lane_metric(client, "ser_work_lane_jobs", "short")
    refused_before = lane_metric(client, "ser_work_lane_refusals_total", "short")
    occupy(client, short, gate)
    assert lane_metric(client, "ser_work_lane_jobs", "short") == jobs_before + 2
    assert post(client, 1.0).status_code == 503
    assert post(client, 1.0).status_code == 503
    assert lane_metric(client, "ser_work_lane_refusals_total", "short") == refused_before + 2
    assert lane_metric(client, "ser_work_lane_refusals_total", "long") >= 0.0
    gate.set()
    for _ in range(200):
        if short.jobs == 0:
            break
        threading.Event().wait(0.01)
    assert lane_metric(client, "ser_work_lane_jobs", "short") == jobs_before


def work_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("work-")}


def test_the_lifespan_makes_the_pools_and_shutdown_ends_their_threads(models_dir) -> None:
    before = work_threads()
    app = create_app(Settings(models_dir=models_dir, long_lane_samples=2 * RATE))
    assert app.state.work_pools is None  # nothing is made before start-up
    with TestClient(app) as client:
        pools = pools_of(client)
        assert post(client, 1.0).status_code == 200  # the short lane starts a thread
        assert post(client, 3.0).status_code == 200  # and the long lane one
        started = work_threads() - before
        assert {t.name.split("_")[0] for t in started} == {"work-short", "work-long"}
    assert app.state.work_pools is None
    assert not any(t.is_alive() for t in started), "a pool thread outlived the app"
    with pytest.raises(RuntimeError, match="after shutdown"):  # closed: takes no new work
        asyncio.run(pools.short.run(print))
    assert pools.short.jobs == 0


async def test_non_finite_rows_fail_only_their_caller() -> None:
    def run(features: np.ndarray) -> np.ndarray:
        out = np.zeros((features.shape[0], 8), np.float32)
        out[features[:, 0, 0] < 0] = np.nan  # a "broken model" on negative inputs
        return out

    batcher = MicroBatcher(run, "test", max_batch_size=8, max_wait_s=0.2)
    good = np.ones((2, 1, 1), np.float32)
    results = await asyncio.gather(
        submit(batcher, good), submit(batcher, -good), return_exceptions=True
    )
    batcher.close()
    assert isinstance(results[0], np.ndarray) and results[0].shape == (2, 8)
    assert isinstance(results[1], InferenceError) and "non-finite" in str(results[1])


def test_a_model_giving_nan_is_a_json_500_never_a_200(make_client, monkeypatch) -> None:
    client = make_client()
    model = client.app.state.registry.get("ce")

    def nan_rows(features: np.ndarray) -> np.ndarray:
        return np.full((len(features), 8), np.nan, np.float32)

    monkeypatch.setattr(model.batcher, "_run", nan_rows)
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    response = client.post("/predict?model=ce", files={"file": ("a.wav", data)})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "inference_failed"
    assert client.post("/predict?model=bce", files={"file": ("a.wav", data)}).status_code == 200


def test_a_huge_model_name_is_not_echoed_whole(client: TestClient) -> None:
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    response = client.post(f"/predict?model={'x' * 60_000}", files={"file": ("a.wav", data)})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    # The name is cut to a short prefix (the rest of the message lists the loaded models).
    assert message.count("x") < 100 and "60000 characters" in message
    assert len(message) < 400


def test_numpy_warnings_are_json_log_lines(capsys) -> None:
    configure_logging("info", json_lines=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure_logging("info", json_lines=True)  # installed inside pytest's own capture
        with np.errstate(over="warn"):
            _ = np.float32(3e38) * np.float32(10)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines, "the warning was not logged"
    entries = [json.loads(line) for line in lines]  # every line is JSON
    assert any(e["event"] == "warning" and e["category"] == "RuntimeWarning" for e in entries)
