"""The ``ser`` command line itself (no server): where options may go, and what --help says."""

from __future__ import annotations

import argparse

import pytest

from ser_client.api import DEFAULT_URL
from ser_client.cli import parser
from ser_client.cli_help import DefaultsHelpFormatter


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://h:1", "predict", "a.wav"],
        ["predict", "a.wav", "--url", "http://h:1"],
        ["predict", "--url", "http://h:1", "a.wav", "--csv"],
        ["--url", "http://h:1", "stream", "a.wav"],
        ["stream", "a.wav", "--fast", "--url", "http://h:1"],
    ],
)
def test_the_url_goes_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert parser().parse_args(argv).url == "http://h:1"


def test_the_url_given_after_the_subcommand_wins_and_the_default_stays() -> None:
    both = ["--url", "http://a:1", "predict", "x", "--url", "http://b:2"]
    assert parser().parse_args(both).url == "http://b:2"
    assert parser().parse_args(["predict", "x"]).url == DEFAULT_URL
    assert parser().parse_args(["stream", "x"]).url == DEFAULT_URL


def _parsers() -> dict[str, argparse.ArgumentParser]:
    root = parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return {"ser": root, **{f"ser {name}": p for name, p in sub.choices.items()}}


def test_every_option_has_help_and_shows_its_default() -> None:
    for name, command in _parsers().items():
        formatter = DefaultsHelpFormatter(name)
        for action in command._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            shown = formatter._get_help_string(action) or ""
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            is_flag = action.nargs == 0 and action.const is True  # store_true: off by default
            if action.option_strings and not is_flag:
                assert "default" in shown, f"{name} {action.option_strings}: no default shown"


def test_subcommand_help_names_the_global_options(capsys: pytest.CaptureFixture[str]) -> None:
    for subcommand in ("predict", "stream"):
        with pytest.raises(SystemExit):
            parser().parse_args([subcommand, "--help"])
        shown = capsys.readouterr().out
        assert "--url" in shown and DEFAULT_URL in shown
        assert "--model" in shown and "ser-ce" in shown
    with pytest.raises(SystemExit):
        parser().parse_args(["predict", "--help"])
    shown = capsys.readouterr().out
    assert "--json" in shown and "--csv" in shown and "(default: 4)" in shown
