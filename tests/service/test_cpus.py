"""The CPU count that sizes the default thread pools follows a container's quota, not the
host's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.cpus import cpu_quota, usable_cpus


def _v2(root: Path, text: str) -> Path:
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: str, period: str = "100000") -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota)
    (root / "cpu" / "cpu.cfs_period_us").write_text(period)
    return root


@pytest.mark.parametrize(
    ("text", "quota"),
    [("200000 100000\n", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5), ("max 100000", None)],
)
def test_cgroup_v2_quota(tmp_path: Path, text: str, quota: float | None) -> None:
    assert cpu_quota(_v2(tmp_path, text)) == quota


@pytest.mark.parametrize(("quota", "expected"), [("300000", 3.0), ("-1", None)])
def test_cgroup_v1_quota(tmp_path: Path, quota: str, expected: float | None) -> None:
    assert cpu_quota(_v1(tmp_path, quota)) == expected


@pytest.mark.parametrize("text", ["", "garbage", "1 2 3", "-5 100000", "100000 0"])
def test_an_unreadable_quota_is_no_quota(tmp_path: Path, text: str) -> None:
    assert cpu_quota(_v2(tmp_path, text)) is None
    assert cpu_quota(tmp_path / "missing") is None


def test_the_quota_caps_the_affinity_rounded_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert usable_cpus(_v2(tmp_path, "150000 100000")) == 2  # 1.5 CPUs: two threads may run
    assert usable_cpus(tmp_path / "none") == 64
    (tmp_path / "cpu.max").write_text("10000 100000")
    assert usable_cpus(tmp_path) == 1  # never 0


def test_the_affinity_caps_a_larger_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert usable_cpus(_v1(tmp_path, "800000")) == 2


def test_this_machine() -> None:
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
