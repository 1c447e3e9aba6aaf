"""Quote the results files in the docs: every measured figure in README.md and docs/ has one source.

A region of a markdown file::

    <!-- figures TABLE ARG... -->
    (generated)
    <!-- /figures -->

is rewritten with ``TABLE`` rendered from ``benchmarks/results/<ARG>.json``, followed by a line
naming the file, when it was measured, on what machine and with which command. A figure quoted
in prose outside a region is listed in :data:`QUOTES` and checked against its file (a
benchmark's, or a released model's file in ``models/``: temperatures, gain-check); any other
figure of the kinds the benchmarks measure (requests/s, clips/s, ms of CPU, p99 ... ms, N
passed...) outside a region is an error, unless :data:`NOT_BENCHMARKS` says where it comes
from. Tables:

- ``service STEM...``: ``python -m benchmarks.bench_service``, one column per results file;
- ``streams STEM``: its ``/ws/stream`` rows and the memory per session;
- ``train-speed STEM``: ``python -m benchmarks.bench_train``;
- ``test-suite STEM``: the last recorded run of the whole test suite (``benchmarks.pytest_record``);
- ``test-files STEM PATH...``: that run's counts and test time for some test files or folders;
- ``gate STEM``: ``python -m benchmarks.bench_gate``, windows called speech by each gate;
- ``corpus-folds models/metrics``: the released recipe's leave-one-corpus-out folds over every
  corpus, beside the paper's three corpora's;
- ``speaker-folds models/metrics [models/ablation]``: the released recipe's speaker folds over
  every corpus, each corpus's held-out speakers beside the paper's three corpora's folds of the
  same speakers; with the ablation file, their validation speakers beside the three corpora's
  ``baseline`` rows of the same length;
- ``held-out-speakers models/metrics``: the released models on their split's test speakers of
  every corpus beyond the paper's three (speakers none of them trained on);
- ``releases models/metrics models/evaluations models/gain``: the served models at a glance;
- ``corpus-ablation models/ablation SELECTION``: recipe variants on the corpus folds of a corpus
  selection, each paired with the same fold's baseline and scored on the corpus it held out.

Usage::

    python -m benchmarks.figures           # rewrite every region from the results files
    python -m benchmarks.figures --check   # change nothing; exit 1 on a stale region, a quote
                                           # not in its file or a figure copied by hand

After a run of the whole suite with ``RECORD_TEST_RUN=1`` (``benchmarks.pytest_record``) or of a
benchmark, run it and commit the results file with the docs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings
from benchmarks.bench_service import (
    EAGER_RATIO_TARGET,
    IDLE_SESSION_TARGET_KB,
    LATENCY_TARGET_MS,
    OVERHEAD_RATIO_TARGET,
    OVERHEAD_TARGET_MS,
    STREAMS_TARGET,
    THROUGHPUT_RATIO_TARGET,
    pipeline_best,
)
from benchmarks.pytest_record import DEFAULT_OUT as TESTS_RECORD
from benchmarks.record import RESULTS

ROOT = RESULTS.parent.parent
DOCS = (
    "README.md",
    "docs/api.md",
    "docs/deployment.md",
    "docs/performance.md",
    "docs/training.md",
    "models/README.md",
)
COMMAND = "python -m benchmarks.figures"
REGION = re.compile(
    r"^(?P<open><!-- figures (?P<spec>[^>]+?) -->)\n(?P<body>.*?)^(?P<close><!-- /figures -->)$",
    re.MULTILINE | re.DOTALL,
)
Results = dict[str, Any]


class FiguresError(ValueError):
    """A region or quote that cannot be rendered: an unknown table or a missing results file."""


def _path(stem: str, results_dir: Path) -> Path:
    return ROOT / f"{stem}.json" if stem.startswith("models/") else results_dir / f"{stem}.json"


def load(stem: str, results_dir: Path = RESULTS) -> Results:
    """``benchmarks/results/<stem>.json``, or, for a stem under ``models/``, that file of the
    released models (``models/calibration``, ``models/gain``: what calibrate and gain-check
    wrote for them)."""
    path = _path(stem, results_dir)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise FiguresError(
            f"{path} does not exist: run the benchmark that writes it, or name another file"
        ) from e


def source(stem: str, results: Results) -> str:
    return (
        f"`benchmarks/results/{stem}.json`: {results['when']}, {results['machine']}, "
        f"`{results['command']}`"
    )


def sources(stems: list[str], runs: list[Results]) -> str:
    return "From " + "; ".join(source(s, r) for s, r in zip(stems, runs, strict=True)) + "."


# -- service: python -m benchmarks.bench_service ---------------------------------------------


@dataclass(frozen=True)
class Target:
    """A bound from the issue and whether a measured value meets it."""

    text: str
    met: Callable[[float], bool]


@dataclass(frozen=True)
class Cell:
    """A measure in one results file: ``text`` (``value`` is what a target reads), ``detail``
    after it; rendered ``text: met; detail``."""

    text: str
    value: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class Row:
    measure: str
    cell: Callable[[Results], Cell | None]  # None: this run did not measure it
    target: Target | None = None

    def render(self, results: Results) -> str:
        cell = self.cell(results)
        if cell is None:
            return "not measured"
        text = cell.text
        if self.target is not None:
            text += ": met" if self.target.met(cell.value) else ": not met"
        return f"{text}; {cell.detail}" if cell.detail else text


def _at(rows: list[dict[str, Any]] | None, concurrency: int) -> dict[str, Any]:
    return next((r for r in rows or [] if r["concurrency"] == concurrency), {})


def _p50_p99(r: Results) -> Cell | None:
    one = _at(r.get("predict"), 1)
    return Cell(f"{one['p50_ms']} / {one['p99_ms']} ms") if one else None


def _in_process(r: Results) -> Cell:
    return Cell(f"{r['pipeline']['latency']['p50_ms']} ms")


def _overhead(r: Results) -> Cell | None:
    one = _at(r.get("predict"), 1)
    if not one:
        return None
    overhead = one["p50_ms"] - r["pipeline"]["latency"]["p50_ms"]
    return Cell(f"{overhead:.2f} ms", overhead)


def _overhead_ratio(r: Results) -> Cell | None:
    one = _at(r.get("predict"), 1)
    if not one:
        return None
    ratio = one["p50_ms"] / r["pipeline"]["latency"]["p50_ms"]
    return Cell(f"{ratio:.2f}", ratio)


def _httpx(r: Results) -> Cell | None:
    typical, lean = _at(r.get("predict_httpx"), 1), _at(r.get("predict"), 1)
    if not typical or not lean:
        return None
    return Cell(
        f"{typical['p50_ms']} ms; {typical['client_cpu_ms_per_request']} ms",
        detail=f"{lean['client_cpu_ms_per_request']} ms",
    )


def _ceiling(r: Results) -> Cell:
    pipeline = r["pipeline"]
    processes = [str(v) for k, v in pipeline.items() if k.startswith("processes_")]
    return Cell(f"{pipeline['workers_2']} / {' / '.join(processes)} clips/s")


def _load(key: str) -> Callable[[Results], Cell | None]:
    def cell(r: Results) -> Cell | None:
        row = _at(r.get(key), 16)
        return Cell(f"{row['p50_ms']} ms / {row['requests_per_s']} requests/s") if row else None

    return cell


def _per_ceiling(key: str) -> Callable[[Results], Cell | None]:
    def cell(r: Results) -> Cell | None:
        row = _at(r.get(key), 16)
        if not row:
            return None
        ratio = row["requests_per_s"] / pipeline_best(r["pipeline"])
        return Cell(f"{ratio:.2f}", ratio)

    return cell


def _batch_wait(r: Results) -> Cell | None:
    one, many = _at(r.get("predict_wait_5ms"), 1), _at(r.get("predict_wait_5ms"), 16)
    if not one or not many:
        return None
    return Cell(f"{one['p50_ms']} ms / {many['requests_per_s']} requests/s")


def _eager(key: str) -> Callable[[Results], Cell | None]:
    def cell(r: Results) -> Cell | None:
        one, eager = _at(r.get("predict"), 1), _at(r.get(key), 1)
        if not one or not eager:
            return None
        ratio = one["p50_ms"] / eager["p50_ms"]
        detail = f"its p50 {eager['p50_ms']} ms, p95 {eager['p95_ms']} ms"
        return Cell(f"{ratio:.2f}", ratio, detail)

    return cell


def _streams(r: Results) -> Cell:
    rows = r["streams"]
    held = max((s["sessions"] for s in rows if s["meets_target"]), default=0)
    p99 = ", ".join(f"{s['p99_ms']} ms at {s['sessions']}" for s in rows if s["sessions"] >= held)
    return Cell(str(held), held, f"p99 {p99}")


def _window_cpu(r: Results) -> Cell:
    costs = [s["server_cpu_ms_per_window"] for s in r["streams"]]
    sessions = [s["sessions"] for s in r["streams"]]
    return Cell(f"{min(costs)}-{max(costs)} ms", detail=f"{min(sessions)}-{max(sessions)} sessions")


def _target_cores(r: Results) -> Cell:
    windows_per_s = STREAMS_TARGET / Settings.model_fields["stream_hop_s"].default
    cores = [s["server_cpu_ms_per_window"] * windows_per_s / 1000 for s in r["streams"]]
    return Cell(f"{min(cores):.1f}-{max(cores):.1f} cores")


def _session_memory(r: Results) -> Cell:
    memory = r["stream_memory"]
    idle = memory["idle_kb_per_session"]
    return Cell(f"{idle} KB", idle, f"{memory['full_kb_per_session']} KB")


def _engine(r: Results) -> Cell | None:
    one: dict[str, Any] = next((e for e in r.get("engine", []) if e["batch"] == 1), {})
    if "pytorch_eager_clips_per_s" not in one:
        return None
    return Cell(
        f"{one['onnxruntime_clips_per_s']} vs {one['pytorch_eager_clips_per_s']} clips/s: "
        f"{one['onnxruntime_speedup']}x",
        detail=f"ONNX Runtime {1000 / one['onnxruntime_clips_per_s']:.2f} ms per clip",
    )


SERVICE_ROWS = (
    Row("`POST /predict`, 3.5 s WAV, 1 client: p50 / p99", _p50_p99),
    Row("the same work in-process, one clip at a time: p50", _in_process),
    Row(
        "server overhead: `/predict` p50 minus the in-process p50",
        _overhead,
        Target(f"<= {OVERHEAD_TARGET_MS:g} ms", lambda v: v <= OVERHEAD_TARGET_MS),
    ),
    Row(
        "`/predict` p50 / the in-process p50",
        _overhead_ratio,
        Target(f"<= {OVERHEAD_RATIO_TARGET:g}", lambda v: v <= OVERHEAD_RATIO_TARGET),
    ),
    Row(
        "the same upload through httpx, 1 client: p50; its client CPU per request; the lean "
        "client's",
        _httpx,
    ),
    Row("in-process ceiling: 2 threads of one process / a process per core", _ceiling),
    Row(
        "16 clients, one process per core (1 decode + 1 ORT thread each): p50 / throughput",
        _load("predict_per_core"),
    ),
    Row(
        "its throughput / the in-process ceiling",
        _per_ceiling("predict_per_core"),
        Target(f">= {THROUGHPUT_RATIO_TARGET:g}", lambda v: v >= THROUGHPUT_RATIO_TARGET),
    ),
    Row("16 clients, one process (`python -m app` defaults): p50 / throughput", _load("predict")),
    Row("its throughput / the in-process ceiling", _per_ceiling("predict")),
    Row("a 5 ms batch wait: p50 at 1 client / throughput at 16", _batch_wait),
    Row(
        "`/predict` p50 / PyTorch-eager baseline p50, torch's default threads, 1 client",
        _eager("eager"),
        Target(f"<= {EAGER_RATIO_TARGET:g}", lambda v: v <= EAGER_RATIO_TARGET),
    ),
    Row("the same, the baseline on the server's ONNX Runtime threads", _eager("eager_matched")),
    Row(
        "real-time streams (0.5 s chunks of 48 kHz s16) with p99 `latency_ms` < "
        f"{LATENCY_TARGET_MS:g} ms; p99 there and beyond",
        _streams,
        Target(f">= {STREAMS_TARGET}", lambda v: v >= STREAMS_TARGET),
    ),
    Row("server CPU per stream window; over the sessions tried", _window_cpu),
    Row(f"server CPU that {STREAMS_TARGET} streams need at that cost", _target_cores),
    Row(
        "server RSS per stream session, idle; with a full window of audio",
        _session_memory,
        Target(
            f"<= {IDLE_SESSION_TARGET_KB / 1024:g} MB idle", lambda v: v <= IDLE_SESSION_TARGET_KB
        ),
    ),
    Row("engine alone, batch 1: ONNX Runtime vs PyTorch eager", _engine),
)


def service(stems: list[str], results_dir: Path) -> str:
    runs = [load(s, results_dir) for s in stems]
    heads = ["result"] if len(stems) == 1 else [f"`{s}.json`" for s in stems]
    lines = [
        "| measure | " + " | ".join(heads) + " | target |",
        "|---|" + "---|" * len(heads) + "---|",
    ]
    for row in SERVICE_ROWS:
        cells = " | ".join(row.render(r) for r in runs)
        lines.append(f"| {row.measure} | {cells} | {row.target.text if row.target else ''} |")
    return "\n".join([*lines, "", sources(stems, runs)])


def streams(stems: list[str], results_dir: Path) -> str:
    (stem,) = stems
    results = load(stem, results_dir)
    lines = [
        f"| sessions | p50 ms | p95 ms | p99 ms | p99 < {LATENCY_TARGET_MS:g} ms "
        "| server CPU ms per window |",
        "|---|---|---|---|---|---|",
        *(
            f"| {s['sessions']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} "
            f"| {'yes' if s['meets_target'] else 'no'} | {s['server_cpu_ms_per_window']} |"
            for s in results["streams"]
        ),
    ]
    memory = results["stream_memory"]
    lines += [
        "",
        f"Server memory (RSS) per session, over {memory['sessions']} sessions: "
        f"{memory['idle_kb_per_session']} KB started and idle, {memory['full_kb_per_session']} KB "
        "holding a full window of audio.",
        "",
        sources(stems, [results]),
    ]
    return "\n".join(lines)


# -- train-speed: python -m benchmarks.bench_train -------------------------------------------


def train_speed(stems: list[str], results_dir: Path) -> str:
    (stem,) = stems
    results = load(stem, results_dir)
    lines = [
        "| layout | fp32 | fp32 + channels_last | bf16 autocast + channels_last "
        "| fast path / fp32 |",
        "|---|---|---|---|---|",
    ]
    for layout, speed in results["layouts"].items():
        lines.append(
            f"| {layout} | {speed['fp32']:.1f} clips/s | {speed['fp32 + channels_last']:.1f} "
            f"clips/s | {speed['bf16 + channels_last']:.1f} clips/s | **{speed['speedup']:.2f}x** |"
        )
    return "\n".join([*lines, "", sources(stems, [results])])


# -- test-suite, test-files: benchmarks.pytest_record ----------------------------------------

NOT_RECORDED = (
    "No run of the whole suite is recorded yet: `RECORD_TEST_RUN=1 make test` writes "
    f"`benchmarks/results/{TESTS_RECORD.stem}.json`, then `{COMMAND}` quotes it here."
)
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[k]} {k}" for k in OUTCOMES if counts.get(k)) or "no tests"


def suite_table(stems: list[str], results_dir: Path) -> str:
    (stem,) = stems
    if not (results_dir / f"{stem}.json").exists():
        return NOT_RECORDED
    run = load(stem, results_dir)
    return (
        f"The last recorded run of the whole suite: **{_outcomes(run['outcomes'])} in "
        f"{run['duration_s']:.0f} s**. From {source(stem, run)}; `RECORD_TEST_RUN=1 make test` "
        "records a new one."
    )


def files_table(args: list[str], results_dir: Path) -> str:
    stem, *paths = args
    if not (results_dir / f"{stem}.json").exists():
        return NOT_RECORDED
    run = load(stem, results_dir)
    lines = ["| tests | outcomes | test time |", "|---|---|---|"]
    for path in paths:
        chosen = [v for f, v in run["files"].items() if f == path or f.startswith(path + "/")]
        if not chosen:
            raise FiguresError(f"{path}: no test file of the recorded run is there")
        counts = {k: sum(f.get(k, 0) for f in chosen) for k in OUTCOMES}
        seconds = sum(f["seconds"] for f in chosen)
        lines.append(f"| `{path}` | {_outcomes(counts)} | {seconds:.0f} s |")
    return "\n".join(
        [
            *lines,
            "",
            f"In the last recorded run of the whole suite (the test time is its setup, call "
            f"and teardown time, not a run of these alone). From {source(stem, run)}.",
        ]
    )


def batching_table(stems: list[str], results_dir: Path) -> str:
    """``python -m benchmarks.bench_batching``: the micro-batcher's modes side by side."""
    from benchmarks.bench_batching import table

    (stem,) = stems
    results = load(stem, results_dir)
    return "\n".join([table(results), "", sources(stems, [results])])


def gate_table(stems: list[str], results_dir: Path) -> str:
    """``python -m benchmarks.bench_gate``: windows called speech per case and gate, costs."""
    from benchmarks.bench_gate import table

    (stem,) = stems
    results = load(stem, results_dir)
    return "\n".join([table(results), "", sources(stems, [results])])


# -- models: the corpus folds of models/metrics.json ----------------------------------------

PAPER_SELECTION = ("ravdess", "savee", "tess")


def _held_out(record: Results) -> tuple[str, Results]:
    ((corpus, scores),) = record["test"]["by_corpus"].items()
    return corpus, scores


def corpus_folds(stems: list[str], results_dir: Path) -> str:
    """Leave-one-corpus-out CE over every corpus, beside the paper's three corpora's folds:
    each held-out corpus's UAR (its own classes), arousal and valence UAR of the decision."""
    (stem,) = stems
    runs = load(stem, results_dir)["runs"]
    folds = [r for r in runs if r["protocol"] == "corpus" and r["loss"] == "ce"]

    def beyond_the_paper(record: Results) -> bool:  # trained or tested on another corpus
        corpora = set(record.get("corpora") or ()) | {_held_out(record)[0]}
        return bool(record.get("corpora")) and not corpora <= set(PAPER_SELECTION)

    grown = {_held_out(r)[0]: r for r in folds if beyond_the_paper(r)}
    paper = {_held_out(r)[0]: r for r in folds if not r.get("corpora")}
    lines = [
        "| held-out corpus | clips | UAR | arousal UAR | valence UAR | epochs | the paper's "
        "three corpora (UAR / arousal / valence, epochs) |",
        "|---|---|---|---|---|---|---|",
    ]
    means: list[tuple[float, float, float]] = []
    for corpus in sorted(grown):
        record = grown[corpus]
        _, held = _held_out(record)
        means.append((held["uar"], held["arousal_uar"], held["valence_uar"]))
        base = "-"
        if corpus in paper:
            _, b = _held_out(paper[corpus])
            base = (
                f"{b['uar']:.3f} / {b['arousal_uar']:.3f} / {b['valence_uar']:.3f}, "
                f"{paper[corpus]['epochs_run']}"
            )
        lines.append(
            f"| {corpus} | {held['n']} | {held['uar']:.3f} | {held['arousal_uar']:.3f} "
            f"| {held['valence_uar']:.3f} | {record['epochs_run']} | {base} |"
        )
    if len(means) > 1:
        mean = [sum(m[k] for m in means) / len(means) for k in range(3)]
        lines.append(
            f"| mean of {len(means)} | | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | | |"
        )
    source = (
        f"From `{stem}.json`: one CE model per held-out corpus, `python -m training train "
        "--loss ce --protocol corpus --epochs 12 --fold K` (K: the corpus's place in name "
        "order), on the 2-core development CPU."
    )
    return "\n".join([*lines, "", source])


def _mean_sd(values: list[float], sign: str = "") -> str:
    """``mean ± sd`` (sample sd) to 3 places; ``sign="+"`` signs the mean."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:{sign}.3f}"
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:{sign}.3f} ± {sd:.3f}"


def speaker_folds(stems: list[str], results_dir: Path) -> str:
    """Unseen speakers: CE on the speaker folds of every corpus, each corpus's held-out
    speakers (TESS: words) as mean ± sd over the folds, beside the paper's three corpora's folds,
    which hold out the same speakers (each corpus is split into folds on its own), paired by
    fold."""
    stem, *more = stems
    runs = load(stem, results_dir)["runs"]
    folds = [r for r in runs if r["protocol"] == "speaker" and r["loss"] == "ce"]
    grown = {r["fold"]: r for r in folds if set(r.get("corpora") or ()) - set(PAPER_SELECTION)}
    paper = {r["fold"]: r["test"]["by_corpus"] for r in folds if not r.get("corpora")}
    paper_epochs = sorted({r["epochs_run"] for r in folds if not r.get("corpora")})
    if not grown:
        raise FiguresError(f"{stem}.json has no speaker fold trained beyond the paper's corpora")
    lines = [
        "| held-out speakers of | folds | clips | UAR | arousal UAR | valence UAR | epochs "
        "| the paper's three corpora: UAR | change in UAR, paired by fold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    corpora = sorted({c for r in grown.values() for c in r["test"]["by_corpus"]})
    for corpus in corpora:
        parts = {k: r["test"]["by_corpus"].get(corpus) for k, r in sorted(grown.items())}
        parts = {k: part for k, part in parts.items() if part is not None}
        epochs = sorted({grown[k]["epochs_run"] for k in parts})
        paired = [k for k in parts if corpus in paper.get(k, {})]
        base, change = "-", "-"
        if paired:
            before = [paper[k][corpus]["uar"] for k in paired]
            diffs = [parts[k]["uar"] - b for k, b in zip(paired, before, strict=True)]
            base = _mean_sd(before)
            up = sum(d > 0 for d in diffs)
            change = f"{_mean_sd(diffs, '+')} (up on {up} of {len(diffs)})"
        lines.append(
            f"| {corpus} | {len(parts)} | {sum(p['n'] for p in parts.values())} "
            f"| {_mean_sd([p['uar'] for p in parts.values()])} "
            f"| {_mean_sd([p['arousal_uar'] for p in parts.values()])} "
            f"| {_mean_sd([p['valence_uar'] for p in parts.values()])} "
            f"| {'/'.join(map(str, epochs))} | {base} | {change} |"
        )
    source = (
        f"From `{stem}.json`: one CE model per fold, `python -m training train --loss ce "
        "--protocol speaker --epochs 12 --fold K` on all seven corpora; the paper's three "
        f"corpora's folds ran {'/'.join(map(str, paper_epochs)) or '-'} epochs; on the 2-core "
        "development CPU."
    )
    same_length = [_same_length(grown, ablation, results_dir) for ablation in more]
    return "\n".join([*lines, "", source, *same_length])


LOSS_ORDER = ("ce", "bce", "smoothl1", "l1")
LOSS_NAMES = {"ce": "CE", "bce": "BCE", "smoothl1": "SmoothL1", "l1": "L1"}
# How the README names the corpora beyond the paper's three: by their language.
LANGUAGES = {"ased": "Amharic", "emotiontts": "Korean", "nemo": "Polish", "turev": "Turkish"}


def _released(stem: str, results_dir: Path) -> dict[str, Results]:
    """The served models' records: one export per loss on the random protocol, trained beyond
    the paper's three corpora, in :data:`LOSS_ORDER`."""
    released = {
        r["loss"]: r
        for r in load(stem, results_dir)["runs"]
        if r["protocol"] == "random"
        and r.get("onnx")
        and r.get("architecture", "sequential") == "sequential"
        and set(r.get("corpora") or ()) - set(PAPER_SELECTION)
    }
    if not released:
        raise FiguresError(f"{stem}.json has no released model trained beyond the paper's corpora")
    return {loss: released[loss] for loss in LOSS_ORDER if loss in released}


def _new_corpora(record: Results) -> list[str]:
    return sorted(set(record["corpora"]) - set(PAPER_SELECTION))


def _test_speakers(split: Path) -> dict[str, int]:
    """How many speakers each corpus has among a split file's test rows."""
    with split.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    speakers: dict[str, set[str]] = {}
    for r in rows:
        speakers.setdefault(r["dataset"], set()).add(r["speaker"])
    return {corpus: len(names) for corpus, names in speakers.items()}


def held_out_speakers(stems: list[str], results_dir: Path) -> str:
    """The released models on the new corpora's test rows, which are speakers no model trained
    on: UAR over the corpus's own classes (chance beside it), arousal and valence UAR of the
    decision."""
    (stem,) = stems
    released = _released(stem, results_dir)
    first = next(iter(released.values()))
    speakers = _test_speakers(_path(stem, results_dir).parent / "splits" / first["split_file"])
    lines = [
        "| held-out speakers of | speakers | clips | chance | "
        + " | ".join(f"{LOSS_NAMES[loss]}: UAR / arousal / valence" for loss in released)
        + " |",
        "|---|---|---|---|" + "---|" * len(released),
    ]
    for corpus in _new_corpora(first):
        parts = [r["test"]["by_corpus"][corpus] for r in released.values()]
        cells = [f"{p['uar']:.3f} / {p['arousal_uar']:.3f} / {p['valence_uar']:.3f}" for p in parts]
        lines.append(
            f"| {corpus} | {speakers.get(corpus, '-')} | {parts[0]['n']} "
            f"| {1 / len(parts[0]['classes']):.2f} | " + " | ".join(cells) + " |"
        )
    epochs = ", ".join(f"{LOSS_NAMES[k]} {r['epochs_run']}" for k, r in released.items())
    source = (
        f"From `{stem}.json`: the test rows of each released model's own split "
        f"(`splits/{first['split_file']}`), scored when `python -m training train` exported it "
        f"(epochs: {epochs})."
    )
    return "\n".join([*lines, "", source])


PAPER_SPLIT = "splits/random.csv"


def releases(stems: list[str], results_dir: Path) -> str:
    """The served models at a glance: corpora and epochs (``metrics``), the paper's test clips
    (``evaluate --record``, checked against the model file's sha256), the new corpora's unseen
    speakers (``metrics``) and the labels a 20 dB quieter or 10 dB louder input changes
    (``gain``)."""
    metrics_stem, evaluations_stem, gain_stem = stems
    released = _released(metrics_stem, results_dir)
    evaluations = load(evaluations_stem, results_dir)["evaluations"]
    gains = load(gain_stem, results_dir)["models"]
    lines = [
        "| model | corpora | epochs | the paper's test split: accuracy (RAVDESS / SAVEE clips) "
        "| new speakers of the new corpora, UAR | labels changed at -20 / +10 dB |",
        "|---|---|---|---|---|---|",
    ]
    for record in released.values():
        model = record["onnx"]
        command = (
            f"run `python -m training evaluate models/{model} --split models/{PAPER_SPLIT} "
            f"--record models/evaluations.json`"
        )
        entry = next(
            (
                e
                for e in evaluations.values()
                if (e["model"], e["split"], e["part"]) == (model, PAPER_SPLIT, "test")
            ),
            None,
        )
        if entry is None:
            raise FiguresError(
                f"{evaluations_stem}.json has no {model} on {PAPER_SPLIT}'s test rows: {command}"
            )
        model_file = _path(metrics_stem, results_dir).parent / model
        if entry["model_sha256"] != hashlib.sha256(model_file.read_bytes()).hexdigest():
            raise FiguresError(f"{evaluations_stem}.json scored another {model}: {command}")
        paper = entry["metrics"]
        by_corpus = paper["accuracy_by_corpus"]
        new = ", ".join(
            f"{LANGUAGES.get(c, c)} {record['test']['by_corpus'][c]['uar']:.2f}"
            for c in _new_corpora(record)
        )
        changed = gains[model]["conditions"]
        lines.append(
            f"| `{model.removesuffix('.onnx')}` | {len(record['corpora'])} "
            f"| {record['epochs_run']} | {100 * paper['accuracy']:.2f} % "
            f"({100 * by_corpus['ravdess']:.1f} % / {100 * by_corpus['savee']:.1f} %) | {new} "
            f"| {100 * changed['-20 dB']['label_changed']:.1f} / "
            f"{100 * changed['+10 dB']['label_changed']:.1f} % |"
        )
    source = (
        f"From `{metrics_stem}.json` (corpora, epochs, the new corpora's test speakers), "
        f"`{evaluations_stem}.json` (`python -m training evaluate models/ser-LOSS.onnx --split "
        f"models/{PAPER_SPLIT} --record models/evaluations.json`) and `{gain_stem}.json` "
        "(`python -m training gain-check`)."
    )
    return "\n".join([*lines, "", source])


def _same_length(grown: dict[int, Results], stem: str, results_dir: Path) -> str:
    """The seven-corpus speaker folds' validation speakers (each corpus's next quarter) beside
    the paper's three corpora's ``baseline`` rows of ``stem`` (``ablate --protocol speaker``) of
    the same fold, base recipe and length: accuracy on the same held-out clips."""
    from app.features import FeatureConfig
    from training.ablation import base_name
    from training.config import TrainConfig

    rows = load(stem, results_dir)["ablation"]

    def recipe(record: Results) -> tuple[str, int]:
        train = TrainConfig.from_dict(record["train_config"])
        return base_name(FeatureConfig.from_dict(record["feature_config"]), train), train.epochs

    baselines = {
        (r["fold"], r.get("base"), r["epochs"]): r
        for r in rows
        if r.get("protocol") == "speaker" and r["variant"] == "baseline" and not r.get("selection")
    }
    pairs = {
        k: (r, baselines[(k, *recipe(r))])
        for k, r in sorted(grown.items())
        if (k, *recipe(r)) in baselines
    }
    if not pairs:
        return ""
    lines = [
        "",
        "| validation speakers of | folds | all seven corpora: accuracy | the paper's three, same "
        "length: accuracy | change, paired by fold |",
        "|---|---|---|---|---|",
    ]
    for corpus in PAPER_SELECTION:
        seven = [r["val"]["by_corpus"][corpus]["accuracy"] for r, _ in pairs.values()]
        three = [b["val_accuracy_by_corpus"][corpus] for _, b in pairs.values()]
        diffs = [a - b for a, b in zip(seven, three, strict=True)]
        lines.append(
            f"| {corpus} | {len(diffs)} | {_mean_sd(seven)} | {_mean_sd(three)} "
            f"| {_mean_sd(diffs, '+')} (up on {sum(d > 0 for d in diffs)} of {len(diffs)}) |"
        )
    plain = sum(b["train_config"].get("label_sets", "all") == "all" for _, b in pairs.values())
    lines += [
        "",
        f"The paper's three at the same length: the `baseline` rows of `{stem}.json` (`python -m "
        "training ablate --protocol speaker --epochs 12 --fold K --variant baseline ...`), the "
        "same recipe, fold and validation clips"
        + (
            f"; {plain} of them trained with the plain loss over all eight classes."
            if plain
            else "."
        ),
    ]
    return "\n".join(lines)


def corpus_ablation(args: list[str], results_dir: Path) -> str:
    """One corpus selection's corpus-fold ablation (``ablate --protocol corpus
    --score-held-out``), as the training report gives it: each variant's held-out scores per
    fold beside the same fold's baseline, then the means and paired changes over the folds."""
    from training.report import held_out_ablation_table  # imports matplotlib: only when asked

    stem, selection = args
    load(stem, results_dir)  # a missing file: say which, and what writes it
    table = held_out_ablation_table(_path(stem, results_dir), selection)
    if not table:
        raise FiguresError(f"{stem}.json has no corpus-fold row scored on {selection}")
    source = (
        f"From `{stem}.json`: `python -m training ablate --protocol corpus --epochs E --fold K "
        "--variant baseline --variant V ... --score-held-out`, one CE model per variant and "
        "fold, on the 2-core development CPU."
    )
    return f"{table}\n\n{source}"


TABLES: dict[str, Callable[[list[str], Path], str]] = {
    "batching": batching_table,
    "corpus-ablation": corpus_ablation,
    "corpus-folds": corpus_folds,
    "gate": gate_table,
    "held-out-speakers": held_out_speakers,
    "releases": releases,
    "service": service,
    "speaker-folds": speaker_folds,
    "streams": streams,
    "train-speed": train_speed,
    "test-suite": suite_table,
    "test-files": files_table,
}


# -- prose: figures quoted outside a region ---------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """``text`` with ``{}`` filled from ``stem``'s results must appear in ``doc`` (line breaks
    and repeated spaces count as one space)."""

    doc: str
    text: str
    stem: str
    figures: Callable[[Results], tuple[str, ...]]

    def expected(self, results_dir: Path = RESULTS) -> str:
        return self.text.format(*self.figures(load(self.stem, results_dir)))


def _one_process_per_core(r: Results) -> tuple[str, ...]:
    at_16 = {key: _at(r[key], 16) for key in ("predict", "predict_per_core")}
    return tuple(
        f"{v:.0f}"
        for v in (
            at_16["predict"]["requests_per_s"],
            at_16["predict_per_core"]["requests_per_s"],
            r["pipeline"]["workers_2"],
            r["pipeline"]["processes_2"],
        )
    )


def _temperature(r: Results, model: str) -> float:
    (row,) = [row for row in r["calibration"] if row["model"] == model]
    return float(row["temperature"])


def _paper_clip_ece(r: Results, model: str) -> tuple[str, str]:
    """ECE after the temperature on the paper's test clips (``calibrate --also-test
    models/splits/random.csv``) to 4 places, and its bootstrap sd to 3."""
    (row,) = [row for row in r["calibration"] if row["model"] == model]
    after = row["also"]["random.csv"]["after"]
    return f"{after['ece']:.4f}", f"{after['ece_sd']:.3f}"


QUOTES = (
    Quote(
        "README.md",
        "the bf16 + channels_last fast path being {}x faster than fp32",
        "train",
        lambda r: (f"{r['layouts']['sequential']['speedup']:.1f}",),
    ),
    Quote(
        "docs/api.md",
        "one process took {} uploads/s at 16 clients and two processes with one decode thread "
        "each {}, against {} clips/s for the same work with no server on 2 threads of one "
        "process and {} on 2 processes",
        "latest",
        _one_process_per_core,
    ),
    Quote(
        "docs/deployment.md",
        "two 1-thread replicas took {} uploads/s at 16 clients and one process {}",
        "latest",
        lambda r: tuple(_one_process_per_core(r)[1::-1]),
    ),
    Quote(
        "docs/api.md",
        "bundled models carry T = {} (bce), {} (ce), {} (smoothl1) and {} (l1)",
        "models/calibration",
        lambda r: tuple(
            f"{_temperature(r, f'ser-{loss}'):.3f}" for loss in ("bce", "ce", "smoothl1", "l1")
        ),
    ),
    Quote(
        "models/README.md",
        "test ECE after the temperature is {} ± {} (CE), {} ± {} (BCE), {} ± {} (SmoothL1) and "
        "{} ± {} (L1)",
        "models/calibration",
        lambda r: tuple(
            figure
            for loss in ("ce", "bce", "smoothl1", "l1")
            for figure in _paper_clip_ece(r, f"ser-{loss}")
        ),
    ),
    Quote(
        "docs/training.md",
        "the released `ser-ce` changes {} % of its labels at -20 dB and {} % at +10 dB",
        "models/gain",
        lambda r: tuple(
            f"{100 * r['models']['ser-ce.onnx']['conditions'][c]['label_changed']:.1f}"
            for c in ("-20 dB", "+10 dB")
        ),
    ),
    Quote(
        "models/README.md",
        "({} against {} clips/s,",
        "train",
        lambda r: tuple(
            f"{r['layouts'][k]['bf16 + channels_last']:.1f}" for k in ("parallel", "sequential")
        ),
    ),
)


# A figure of the kinds the benchmarks measure, written outside a region and not a quote.
HAND_COPIED = re.compile(
    r"\b\d[\d.,]*(?:-\d[\d.,]*)? ?(?:requests/s|uploads/s|clips/s|KB (?:idle|of server memory)"
    r"|ms (?:of (?:server |client )?CPU|per window|per request|per clip)|passed\b|tests\b)"
    r"|\bp(?:50|95|99)\b[^.;|\n]{0,40}?\b\d+(?:\.\d+)? ms"
)
# Figures of those kinds that no benchmark measures, each with where it comes from.
NOT_BENCHMARKS = {
    # the trim's speed against librosa's, measured once when app/segment.py replaced it
    ("docs/training.md", "0.6 ms per clip"),
}


def hand_copied(doc: str, text: str, results_dir: Path = RESULTS) -> list[str]:
    """Benchmark-like figures in ``text`` outside its regions, its quotes and NOT_BENCHMARKS."""
    prose = " ".join(REGION.sub("", text).split())
    for quote in QUOTES:
        if quote.doc == doc:
            prose = prose.replace(quote.expected(results_dir), "")
    return [
        m.group() for m in HAND_COPIED.finditer(prose) if (doc, m.group()) not in NOT_BENCHMARKS
    ]


# -- the command --------------------------------------------------------------------------------


def render_region(spec: str, results_dir: Path = RESULTS) -> str:
    name, *args = spec.split()
    if name not in TABLES:
        raise FiguresError(
            f"unknown table {name!r} in <!-- figures {spec} -->; known: {list(TABLES)}"
        )
    return TABLES[name](args, results_dir)


def render(text: str, results_dir: Path = RESULTS) -> str:
    """``text`` with every region rewritten from the results files."""

    def region(m: re.Match[str]) -> str:
        body = render_region(m["spec"], results_dir)
        return f"{m['open']}\n\n{body}\n\n{m['close']}"

    return REGION.sub(region, text)


def stale_regions(text: str, results_dir: Path = RESULTS) -> list[str]:
    """The specs of the regions in ``text`` that differ from what :func:`render` writes."""
    return [
        m["spec"]
        for m in REGION.finditer(text)
        if m["body"] != f"\n{render_region(m['spec'], results_dir)}\n\n"
    ]


def unmeasured_quotes(
    quotes: Iterable[Quote], root: Path = ROOT, results_dir: Path = RESULTS
) -> list[str]:
    """A line for each quote whose text, filled from its results file, is not in its doc."""
    missing = []
    for quote in quotes:
        prose = " ".join((root / quote.doc).read_text().split())
        expected = quote.expected(results_dir)
        if expected not in prose:
            missing.append(f"{quote.doc}: {expected!r} (from {quote.stem}.json)")
    return missing


def problems(check: bool) -> list[str]:
    """What is wrong with the docs' figures; with ``check`` False, stale regions are rewritten
    first (a quote or a figure copied by hand needs a person)."""
    found = unmeasured_quotes(QUOTES)
    for doc in DOCS:
        path = ROOT / doc
        text = path.read_text()
        if not check and (new := render(text)) != text:
            path.write_text(text := new)
            print(f"rewrote {doc}")
        found += [f"{doc}: <!-- figures {s} --> is stale" for s in stale_regions(text)]
        found += [f"{doc}: {f!r} is copied by hand" for f in hand_copied(doc, text)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if a region is stale, a quote is not in its results file "
        "or a figure is copied by hand",
    )
    found = problems(parser.parse_args(argv).check)
    for problem in found:
        print(problem)
    if found:
        print(
            f"A stale region: run `{COMMAND}`. A quote: edit the prose to its results file. A "
            "figure copied by hand: quote it through a region or QUOTES (benchmarks/figures.py)."
        )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
