"""``python -m training`` as a command line: nothing runs unasked, --help shows the defaults,
and ``train`` says where it writes before it starts."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import training.cli as cli
from training.errors import UsageError


def _refuse_to_train(monkeypatch: pytest.MonkeyPatch) -> None:
    def train(args: argparse.Namespace) -> int:
        raise AssertionError("training started without being asked")

    monkeypatch.setattr(cli, "run_train", train)


@pytest.mark.parametrize(
    ("argv", "hint"),
    [([], "python -m training train\n"), (["--resume"], "python -m training train --resume")],
)
def test_no_command_prints_the_help_and_trains_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], hint: str
) -> None:
    _refuse_to_train(monkeypatch)
    assert cli.main(argv) == 2
    shown = capsys.readouterr()
    assert "usage: python -m training" in shown.out and "gain-check" in shown.out
    assert hint in shown.err


def test_train_flags_follow_the_train_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "run_train", lambda args: seen.append(args) or 0)
    assert cli.main(["train", "--resume", "--precision", "fp32", "--epochs", "3"]) == 0
    (args,) = seen
    assert args.resume and args.precision == "fp32" and args.epochs == 3
    config = cli._train_config(args)
    assert config.precision == "fp32" and config.epochs == 3
    assert config.snr_db == (15.0, 45.0)  # the release's noise range unless asked


def test_recipe_flags_reach_the_config_and_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "run_train", lambda args: seen.append(args) or 0)
    argv = ["train", "--snr-db", "15", "30", "--trim-floor", "absolute", "--level", "none"]
    assert cli.main([*argv, "--class-balance", "1", "--label-sets", "all"]) == 0
    (args,) = seen
    assert cli._train_config(args).snr_db == (15.0, 30.0)
    assert (cli._train_config(args).class_balance, cli._train_config(args).label_sets) == (
        1.0,
        "all",
    )
    assert (args.trim_floor, args.level) == ("absolute", "none")
    defaults = cli.build_parser().parse_args(["train"])
    assert (defaults.trim_floor, defaults.level) == ("relative", "window")


def _commands() -> dict[str, argparse.ArgumentParser]:
    root = cli.build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_has_help_and_shows_its_default() -> None:
    for name, command in _commands().items():
        assert command.formatter_class is cli.DefaultsHelpFormatter, name
        formatter = cli.DefaultsHelpFormatter(name)
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {action.option_strings or action.dest}"
            assert action.help, f"{label}: no help text"
            is_flag = action.nargs == 0  # store_true: off unless given
            if action.option_strings and not is_flag and not action.required:
                assert "default" in (formatter._get_help_string(action) or ""), label


def test_train_help_shows_where_it_writes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for default in ("(default: models)", "(default: runs)", "(default: random)", "(default: all)"):
        assert default in shown


def test_train_says_where_it_writes_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import training.pipeline as pipeline

    printed_first: list[str] = []

    def run_experiment(experiment: Any) -> None:
        printed_first.append(capsys.readouterr().out)

    monkeypatch.setattr(pipeline, "run_experiment", run_experiment)
    models, runs = tmp_path / "m", tmp_path / "r"
    argv = ["train", "--loss", "ce", "--out", str(models), "--runs", str(runs)]
    assert cli.main([*argv, "--corpora", "tess,ravdess,savee"]) == 0
    assert cli.main([*argv, "--corpora", "ravdess,nemo", "--protocol", "corpus"]) == 0
    paper, grown = printed_first
    assert f"{models}/" in paper and "ser-<loss>.onnx" in paper
    assert f"{runs}/random/ser-<loss>/" in paper and "train.log" in paper
    assert f"{runs}/nemo+ravdess/corpus-fold<k>/ser-<loss>/" in grown


def test_held_out_scoring_is_refused_where_there_is_no_held_out_corpus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.ablation

    def fit_nothing(*args: Any, **kwargs: Any) -> list[dict]:
        raise AssertionError("an ablation started")

    monkeypatch.setattr(training.ablation, "run_ablation", fit_nothing)
    assert cli.main(["ablate", "--protocol", "speaker", "--score-held-out"]) == 2
    assert "--score-held-out needs --protocol corpus" in capsys.readouterr().err


def test_a_run_that_cannot_be_done_as_asked_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(args: argparse.Namespace) -> int:
        raise UsageError("models/splits/random.csv lists 4718 clips: pass another --out")

    monkeypatch.setattr(cli, "run_train", refuse)
    assert cli.main(["train", "--limit", "200", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "python -m training train: error: models/splits/random.csv lists 4718 clips: "
        "pass another --out\n"
    )


def test_a_python_without_the_extra_is_told_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def needs_torch(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "run_train", needs_torch)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert "needs torch" in err and "pip install -e '.[train]'" in err


def test_the_help_loads_neither_torch_nor_matplotlib() -> None:
    """`python -m training --help` took 6-9 s importing torch to list the ablation variants."""
    probe = (
        "import sys, training.cli as c; c.build_parser().format_help(); "
        "print(sorted({'torch', 'matplotlib', 'scipy'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
