"""``python -m training data``: counts, split sizes and split files for any corpus folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main
from training.splits import read_split, split_sha256


def test_data_command_json(
    mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "splits"
    assert main(["data", "--data", str(mixed_root), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 6 + 8 + 4
    assert report["counts"]["tess"]["surprised"] == 2
    assert report["counts"]["ravdess"]["happy"] == 2
    assert report["counts"]["savee"]["calm"] == 0
    stems = (
        ["random"] + [f"speaker-fold{k}" for k in range(4)] + [f"corpus-fold{k}" for k in range(3)]
    )
    assert list(report["splits"]) == stems
    for stem in stems:
        info = report["splits"][stem]
        assert info["sha256"] == split_sha256(out / f"{stem}.csv")
        rows = read_split(out / f"{stem}.csv")
        assert len(rows) == 18
        assert sum(info["sizes"]["all"].values()) == 18
        assert info["sizes"]["tess"]["test"] == sum(
            1 for clip, part in rows if clip.dataset == "tess" and part == "test"
        )


def test_data_command_table(
    mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "--data", str(mixed_root), "--out", str(tmp_path / "s")]) == 0
    text = capsys.readouterr().out
    assert "18 clips" in text
    ravdess = next(line for line in text.splitlines() if line.startswith("ravdess"))
    assert ravdess.split() == ["ravdess", "1", "1", "2", "0", "0", "1", "0", "1", "6"]
    assert "speaker-fold3.csv" in text
    assert (tmp_path / "s" / "random.csv").is_file()


def test_data_command_on_an_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "--data", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "expected a manifest.csv" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
