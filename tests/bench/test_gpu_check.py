"""``python -m benchmarks.gpu_check``: its CPU half, and what it says where there is no GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import gpu_check


def test_without_a_cuda_build_it_says_so_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    if "CUDAExecutionProvider" in gpu_check.ort.get_available_providers():
        pytest.skip("this machine has CUDA: the real check runs instead")
    assert gpu_check.main(["--no-training"]) == gpu_check.EXIT_NO_GPU
    assert "no CUDA execution provider" in capsys.readouterr().out


def test_the_cpu_half_compares_every_model_at_every_batch_size(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.main(["--models", str(models_dir), "--providers", "cpu", "--clips", "3",
                           "--repeats", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    models = sorted(models_dir.glob("*.onnx"))
    assert out.count("runs on cpu; largest probability gap to the CPU 0.00e+00 (ok") == len(models)
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(1, 17)) * len(models)  # SER_MAX_BATCH_SIZE
