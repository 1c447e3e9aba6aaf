"""The CUDA path without a GPU: provider options, what is said when CUDA cannot start, and a
model whose engine keeps failing taking the replica out of rotation (app/engine.py)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import cuda, engine, registry
from app.engine import CudaOptions, InferenceError, MicroBatcher, ProviderError
from tests.service.conftest import ClientFactory

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class FakeSession:
    """What ``ort.InferenceSession`` was given, and a provider it "really" runs on."""

    created: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, path: str, sess_options: Any, providers: list[Any]) -> None:
        FakeSession.created.append({"path": path, "providers": providers})
        self.providers = providers

    def get_providers(self) -> list[str]:
        return [CPU]  # CUDA did not start: ONNX Runtime fell back silently


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """An onnxruntime build that lists CUDA, on a machine where it does not start; it prints
    the reason to the process's stderr as the real one does."""

    def session(path: str, sess_options: Any, providers: list[Any]) -> FakeSession:
        os.write(2, b"[E:onnxruntime] Failed to load libcudnn.so.9: cannot open shared object\n")
        return FakeSession(path, sess_options, providers)

    FakeSession.created = []
    monkeypatch.setattr(engine.ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(engine.ort, "InferenceSession", session)


def test_cuda_gets_its_device_search_and_memory_options(no_cuda: None) -> None:
    cuda = CudaOptions(device_id=1, mem_limit_bytes=2**30)
    engine.open_session(Path("m.onnx"), ("cuda", "cpu"), 1, 1, cuda)
    ((name, options), cpu) = FakeSession.created[0]["providers"]
    assert (name, cpu) == (CUDA, CPU)
    assert options["device_id"] == "1" and options["gpu_mem_limit"] == str(2**30)
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"  # the batch axis is dynamic
    assert "gpu_mem_limit" not in CudaOptions().provider_options()


def test_a_cuda_that_does_not_start_says_why(no_cuda: None) -> None:
    with pytest.raises(ProviderError) as refused:
        engine.open_session(Path("m.onnx"), ("cuda",), 1, 1)
    message = str(refused.value)
    assert "libcudnn.so.9: cannot open shared object" in message  # ONNX Runtime's own words
    assert "SER_PROVIDERS=cuda,cpu" in message


def test_a_fallback_to_cpu_is_logged_with_its_cause(
    no_cuda: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.engine")
    _, provider = engine.open_session(Path("m.onnx"), ("cuda", "cpu"), 1, 1)
    assert provider == "cpu"
    (fallback,) = [r for r in caplog.records if getattr(r, "event", "") == "provider_fallback"]
    assert "libcudnn.so.9" in fallback.reason  # type: ignore[attr-defined]
    said = [r for r in caplog.records if getattr(r, "event", "") == "onnxruntime_stderr"]
    assert said and "Failed to load" in said[0].text  # type: ignore[attr-defined]


def test_the_libraries_are_read_in_the_order_they_fail() -> None:
    def missing(name: str) -> Any:
        def load(lib: str) -> None:
            if lib == name:
                raise OSError(f"{lib}: cannot open shared object file")

        return load

    assert cuda.cuda_diagnosis(missing("libcuda.so.1")).startswith("libcuda.so.1 cannot")
    assert "--gpus all" in cuda.cuda_diagnosis(missing("libcuda.so.1"))
    assert "cuDNN 9" in cuda.cuda_diagnosis(missing("libcudnn.so.9"))
    assert "R580" in cuda.cuda_diagnosis(lambda lib: None)


class FakeCudaLibraries:
    """libcuda, libcudart and libcudnn as ctypes sees them, for an L4 on device 1; ``missing``
    libraries raise as a failed dlopen does."""

    def __init__(self, *missing: str) -> None:
        self.missing = missing
        self.cudnnGetVersion = lambda: 91300  # a function: ctypes sets its restype

    def __call__(self, name: str) -> Any:
        if name in self.missing:
            raise OSError(f"{name}: cannot open shared object file")
        return self

    @staticmethod
    def _set(ref: Any, value: int) -> int:
        ref._obj.value = value  # what the C function writes through its pointer
        return 0

    def cuDriverGetVersion(self, version: Any) -> int:
        return self._set(version, 13000)

    def cuInit(self, flags: int) -> int:
        return 0

    def cuDeviceGet(self, device: Any, ordinal: int) -> int:
        return self._set(device, ordinal) if ordinal == 1 else 101  # CUDA_ERROR_INVALID_DEVICE

    def cuDeviceGetName(self, buffer: Any, size: int, device: Any) -> int:
        buffer.value = b"NVIDIA L4"
        return 0

    def cuDeviceGetAttribute(self, value: Any, attribute: int, device: Any) -> int:
        return self._set(value, {75: 8, 76: 9}[attribute])

    def cudaRuntimeGetVersion(self, version: Any) -> int:
        return self._set(version, 13010)


def test_the_gpu_and_its_cuda_stack_are_read_from_the_libraries() -> None:
    assert cuda.cuda_device(1, FakeCudaLibraries()) == {
        "driver_cuda": "13.0",
        "gpu": "NVIDIA L4",
        "compute_capability": "8.9",
        "cuda_runtime": "13.1",
        "cudnn": "9.13.0",
    }
    # what cannot be read is left out: no such device, no cuDNN, no driver at all
    assert cuda.cuda_device(0, FakeCudaLibraries()).keys() == {
        "driver_cuda",
        "cuda_runtime",
        "cudnn",
    }
    assert "cudnn" not in cuda.cuda_device(1, FakeCudaLibraries("libcudnn.so.9"))
    assert cuda.cuda_device(1, FakeCudaLibraries("libcuda.so.1", "libcudart.so.13")) == {
        "cudnn": "9.13.0"
    }


def test_a_model_on_cuda_is_warmed_batched_greedily_and_names_its_gpu(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real CPU session that reports CUDA: what the registry does for a model on a GPU.
    def on_cuda(*args: Any, **kwargs: Any) -> tuple[Any, str]:
        session, _ = engine.open_session(*args, **kwargs)
        return session, "cuda"

    monkeypatch.setattr(registry, "open_ort_session", on_cuda)
    monkeypatch.setattr(registry, "cuda_device", lambda device_id: {"gpu": f"GPU {device_id}"})
    warmed: list[list[int]] = []
    warm_up = MicroBatcher.warm_up
    monkeypatch.setattr(MicroBatcher, "warm_up", lambda b, x: warmed.append(warm_up(b, x)))
    client = make_client(cuda_device_id=3, max_batch_size=4)
    listed = {m["key"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["ce"]["provider"] == "cuda" and listed["ce"]["device"] == {"gpu": "GPU 3"}
    assert listed["ce"]["batching"] == {"mode": "greedy", "max_batch_size": 4, "max_wait_ms": 0}
    assert warmed and all(sizes == [1, 2, 3, 4] for sizes in warmed)


@pytest.mark.parametrize(
    ("preference", "both_wheels", "warned"),
    [(("cuda", "cpu"), False, True), (("auto",), False, False), (("auto",), True, True)],
)
def test_cuda_asked_for_on_a_build_without_it_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    preference: tuple[str, ...],
    both_wheels: bool,
    warned: bool,
) -> None:
    monkeypatch.setattr(engine, "both_runtime_wheels", lambda: both_wheels)
    caplog.set_level(logging.WARNING, logger="app.engine")
    engine._warn_if_cuda_missing(preference, [CPU])
    warnings = [r for r in caplog.records if getattr(r, "event", "") == "cuda_unavailable"]
    assert bool(warnings) is warned
    if both_wheels:
        assert "pip uninstall -y onnxruntime onnxruntime-gpu" in warnings[0].reason  # type: ignore[attr-defined]


def scripted(outcomes: str) -> Any:
    """A run that fails ("x") or answers (".") in the order of ``outcomes``."""
    steps = iter(outcomes)

    def run(rows: np.ndarray) -> np.ndarray:
        if next(steps) == "x":
            raise RuntimeError("CUDA failure 700: an illegal memory access, /build/cuda.cc:42")
        return np.zeros((len(rows), 8), np.float32)

    return run


def outcomes_of(batcher: MicroBatcher, n: int) -> str:
    seen = ""
    for _ in range(n):
        try:
            batcher.run_rows(np.zeros((1, 2, 2), np.float32))
            seen += "."
        except InferenceError as e:
            assert "illegal memory access" not in str(e)  # the engine's words: the log only
            seen += "x"
    return seen


@pytest.mark.parametrize("wait_s", [None, 0.0])  # off (the CPU default), greedy (CUDA's)
def test_failures_in_a_row_break_the_model(wait_s: float | None) -> None:
    batcher = MicroBatcher(scripted("xxx"), "ce", 16, wait_s, max_failures=3)
    assert outcomes_of(batcher, 2) == "xx" and batcher.broken is None
    assert outcomes_of(batcher, 1) == "x"
    assert batcher.broken is not None and "3 batches in a row" in batcher.broken
    batcher.close()


def test_a_success_resets_the_count() -> None:
    batcher = MicroBatcher(scripted("xx.xx.xx."), "ce", 16, 0.0, max_failures=3)
    assert outcomes_of(batcher, 9) == "xx.xx.xx." and batcher.broken is None
    batcher.close()


def test_a_hung_engine_times_out_and_counts_as_failed() -> None:
    release = threading.Event()

    def hang(rows: np.ndarray) -> np.ndarray:
        release.wait(5)
        return np.zeros((len(rows), 8), np.float32)

    batcher = MicroBatcher(hang, "ce", 16, 0.001, max_failures=1, timeout_s=0.2)
    with pytest.raises(InferenceError, match=r"no answer within 0\.2 s"):
        batcher.run_rows(np.zeros((1, 2, 2), np.float32))
    assert batcher.broken is not None
    release.set()
    batcher.close()


def test_a_broken_engine_takes_the_replica_out_of_rotation(make_client: ClientFactory) -> None:
    client: TestClient = make_client()
    assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200
    batcher = client.app.state.registry.models["ce"].batcher  # type: ignore[attr-defined]
    batcher.broken = "the ce model failed 5 batches in a row (RuntimeError)"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "5 batches in a row" in ready.json()["error"]["message"]
    live = client.get("/healthz")
    assert live.status_code == 503 and live.json()["error"]["code"] == "engine_failed"
    assert "ser_models_ready 0.0" in client.get("/metrics").text


def test_warm_up_runs_every_batch_size_on_the_batchers_thread() -> None:
    seen: list[tuple[int, str]] = []

    def run(rows: np.ndarray) -> np.ndarray:
        seen.append((len(rows), threading.current_thread().name))
        return np.zeros((len(rows), 8), np.float32)

    batcher = MicroBatcher(run, "ce", 4, 0.0)  # greedy, as on CUDA: queued batches
    assert batcher.warm_up(np.zeros((2, 2), np.float32)) == [1, 2, 3, 4]
    assert [n for n, _ in seen] == [1, 2, 3, 4]
    assert {name for _, name in seen} == {"batcher-ce"}
    batcher.close()
