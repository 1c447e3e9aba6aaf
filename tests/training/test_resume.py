"""A training run killed after an epoch and resumed gives the run that was never interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from app.features import FeatureConfig
from training.config import TrainConfig
from training.model import ModelConfig
from training.train import LAST_CHECKPOINT, LabelledFeatures, Run, fit, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
# Every regulariser on and a three-version pool: the resumed run must restore every random
# source (batch order, versions, masks, mixup draws, dropout) to match.
CONFIG = TrainConfig(epochs=3, batch_size=16, warmup_epochs=1, seed=3, device="cpu")
MODEL = ModelConfig(n_frames=64)
FEATURES = FeatureConfig().with_stats(np.zeros(128), np.ones(128))


def pool(n_clips: int, versions: int, seed: int) -> LabelledFeatures:
    """Half-precision features with a label-dependent band, ``versions`` noisy versions."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(n_clips) % 8, versions)
    x = rng.standard_normal((versions * n_clips, 128, 64)).astype(np.float32)
    for i, label in enumerate(labels):
        x[i, label * 16 : label * 16 + 8] += 3.0
    return LabelledFeatures(x.astype(np.float16), labels.astype(np.int64), versions=versions)


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tests.training.test_resume import CONFIG, FEATURES, MODEL, pool
    from training.train import fit

    def kill_after_first(run):
        if run.epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    fit(MODEL, CONFIG, FEATURES, pool(48, 3, 0), pool(16, 1, 1), Path(sys.argv[1]),
        on_epoch_end=kill_after_first)
    """
)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_history(tmp_path: Path) -> None:
    train, val = pool(48, 3, 0), pool(16, 1, 1)
    whole = fit(MODEL, CONFIG, FEATURES, train, val, tmp_path / "whole")

    killed_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(killed_dir)], cwd=ROOT, env=env, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL
    assert len(json.loads((killed_dir / "history.json").read_text())) == 1

    resumed = fit(MODEL, CONFIG, FEATURES, train, val, killed_dir, resume=True)

    def without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert len(resumed.history) == 3
    assert without_timing(resumed.history) == without_timing(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    log = (killed_dir / "train.log").read_text()
    assert "resumed after epoch 1" in log
    epoch_lines = re.findall(r" epoch (\d)/3 ", log)
    assert epoch_lines == ["1", "2", "3"]  # one line per epoch, none repeated
    _, saved = load_checkpoint(killed_dir / "best.pt")
    assert saved["epoch"] == whole.best_epoch


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    train, val = pool(16, 2, 0), pool(8, 1, 1)
    one_epoch = CONFIG.replace(epochs=1)
    fit(MODEL, one_epoch, FEATURES, train, val, tmp_path)
    assert (tmp_path / LAST_CHECKPOINT).exists()
    with pytest.raises(ValueError, match="another train_config"):
        fit(MODEL, one_epoch.replace(lr=1e-4), FEATURES, train, val, tmp_path, resume=True)


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_its_default(
    tmp_path: Path,
) -> None:
    train, val = pool(16, 2, 0), pool(8, 1, 1)
    more = CONFIG.replace(epochs=2)
    fit(MODEL, more.replace(time_budget_s=1e-9), FEATURES, train, val, tmp_path)  # 1 epoch
    checkpoint = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=False)
    del checkpoint["train_config"]["class_balance"]  # as written before it was added
    torch.save(checkpoint, tmp_path / LAST_CHECKPOINT)
    seen: list[int] = []
    fit(MODEL, more, FEATURES, train, val, tmp_path, True, lambda run: seen.append(run.epoch))
    assert seen == [2]  # continued from epoch 1
    other = more.replace(class_balance=1.0)  # the new setting at another value
    with pytest.raises(ValueError, match="another train_config"):
        fit(MODEL, other, FEATURES, train, val, tmp_path, True)


def test_resume_takes_other_operational_settings(tmp_path: Path) -> None:
    """How a run is carried out (workers, device, a time budget) may change on a resume."""
    train, val = pool(16, 2, 0), pool(8, 1, 1)
    fit(MODEL, CONFIG.replace(epochs=2, time_budget_s=1e-9), FEATURES, train, val, tmp_path)
    seen: list[int] = []

    def record(run: Run) -> None:
        seen.append(run.epoch)

    resumed = CONFIG.replace(epochs=2, workers=2, eval_batch_size=64, time_budget_s=None)
    fit(MODEL, resumed, FEATURES, train, val, tmp_path, True, record)
    assert seen == [2]  # continued after the budgeted epoch, with the new settings


def test_a_time_budget_bounds_each_invocation_so_resume_goes_on(tmp_path: Path) -> None:
    """A budget spent in one process is not spent again by --resume with the same budget."""
    train, val = pool(16, 2, 0), pool(8, 1, 1)
    budgeted = CONFIG.replace(epochs=3, time_budget_s=1e-9)  # one epoch per invocation
    epochs: list[int] = []
    for _ in range(3):
        result = fit(MODEL, budgeted, FEATURES, train, val, tmp_path, resume=True)
        epochs.append(len(result.history))
    assert epochs == [1, 2, 3]


def test_the_removed_compile_key_of_older_checkpoints_is_ignored() -> None:
    old = {**CONFIG.to_dict(), "compile": False}
    assert TrainConfig.from_dict(old) == CONFIG


def test_resume_without_a_checkpoint_starts_afresh(tmp_path: Path) -> None:
    train, val = pool(16, 2, 0), pool(8, 1, 1)
    seen: list[int] = []

    def record(run: Run) -> None:
        seen.append(run.epoch)

    fit(MODEL, CONFIG.replace(epochs=2), FEATURES, train, val, tmp_path, True, record)
    assert seen == [1, 2]


def test_an_epoch_draws_one_version_of_each_clip() -> None:
    from training.train import _epoch_rows, start_run

    run = start_run(MODEL, CONFIG, FEATURES, steps_per_epoch=1)
    rows = _epoch_rows(n_clips=100, versions=3, run=run).numpy()
    assert len(rows) == 100
    assert sorted(rows % 100) == list(range(100))  # every clip exactly once
    assert set(rows // 100) == {0, 1, 2}  # versions drawn from all three
