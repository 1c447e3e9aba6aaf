"""A pytest plugin that records a run of the whole suite, as the benchmarks record theirs.

With ``RECORD_TEST_RUN=1`` in the environment (``RECORD_TEST_RUN=1 make test``), a run of the
whole suite writes ``benchmarks/results/tests.json``: when, on what machine, the command, the
outcome counts as pytest's last line gives them, the wall time, and the same per test file.
``python -m benchmarks.figures`` then quotes it in the README and docs. Any other value than
``1`` is the path to write instead. A run of part of the suite (paths, ``-k``, ``-m``, ``--lf``)
is not recorded: the docs quote it as the whole suite.

``tests/conftest.py`` loads this plugin; without the variable it does nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from benchmarks.record import RESULTS, machine, when

ENV = "RECORD_TEST_RUN"
DEFAULT_OUT = RESULTS / "tests.json"


class SuiteRecord:
    """Counts every report the way the terminal summary does, per test file."""

    def __init__(self, config: pytest.Config, out: Path) -> None:
        self.config = config
        self.out = out
        self.started = time.perf_counter()  # again at session start, as pytest's own clock
        self.when = when()
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.seconds: dict[str, float] = defaultdict(float)
        self.deselected = 0

    def pytest_sessionstart(self) -> None:
        self.started = time.perf_counter()
        self.when = when()

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.counts[report.nodeid.split("::")[0]]["error"] += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        path = report.nodeid.split("::")[0]
        self.seconds[path] += report.duration
        category = self.config.hook.pytest_report_teststatus(report=report, config=self.config)[0]
        if category:
            self.counts[path][category] += 1

    def whole_suite(self) -> str | None:
        """None when this run is the whole suite, else why it is not."""
        config = self.config
        if config.args_source != pytest.Config.ArgsSource.TESTPATHS:
            return f"paths given ({' '.join(config.args)})"
        if self.deselected or config.option.keyword or config.option.markexpr:
            return "tests deselected (-k, -m, --lf or a plugin)"
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        reason = self.whole_suite()
        if reason is None and exitstatus == pytest.ExitCode.INTERRUPTED:
            reason = "interrupted"
        if reason is not None:
            print(f"\n{ENV}: not recorded ({reason}); only the whole suite is", flush=True)
            return
        record = self.record(int(exitstatus), time.perf_counter() - self.started)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\n{ENV}: recorded in {self.out}", flush=True)

    def record(self, exitstatus: int, duration_s: float) -> dict[str, Any]:
        args = self.config.invocation_params.args
        files = {
            path: {
                **dict(sorted(self.counts[path].items())),
                "seconds": round(self.seconds[path], 2),
            }
            for path in sorted(self.seconds.keys() | self.counts.keys())
        }
        total = sum(self.counts.values(), Counter[str]())
        return {
            "when": self.when,
            "machine": machine(),
            "command": " ".join(["python -m pytest", *args]),
            "exit_status": exitstatus,
            "duration_s": round(duration_s, 1),
            "outcomes": dict(sorted(total.items())),
            "files": files,
        }


def pytest_configure(config: pytest.Config) -> None:
    value = os.environ.get(ENV, "")
    if value:
        out = DEFAULT_OUT if value == "1" else Path(value)
        config.pluginmanager.register(SuiteRecord(config, out), "suite-record")
