"""The docs' figures have one source: the results files, quoted by ``python -m benchmarks.figures``.

Every generated region must be what the command writes from today's results files, every figure
quoted in prose must be in its results file, and no figure of the kinds the benchmarks measure
may be typed anywhere else in README.md or docs/. Then the command itself, and the plugin that
records a run of the suite, on small made-up inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_batching, figures
from benchmarks.figures import DOCS, QUOTES, ROOT, FiguresError
from tests.bench.test_bench_report import RESULTS as SERVICE_RESULTS

# Which tables each doc quotes: a region deleted and its table typed by hand fails here.
TABLES_IN = {
    "README.md": {"service", "test-suite", "corpus-folds", "releases"},
    "docs/performance.md": {"service", "batching"},
    "docs/api.md": {"streams", "test-files", "gate"},
    "docs/deployment.md": {"test-files"},
    "docs/training.md": {"train-speed"},
    "models/README.md": {"corpus-folds", "corpus-ablation", "speaker-folds", "held-out-speakers"},
}


@pytest.mark.parametrize("doc", DOCS)
def test_every_region_is_what_the_command_writes(doc: str) -> None:
    stale = figures.stale_regions((ROOT / doc).read_text())
    assert not stale, f"{doc}: {stale} differ from the results files: run {figures.COMMAND}"


@pytest.mark.parametrize("doc", DOCS)
def test_each_doc_quotes_its_tables_through_regions(doc: str) -> None:
    specs = [m["spec"].split()[0] for m in figures.REGION.finditer((ROOT / doc).read_text())]
    assert set(specs) == TABLES_IN[doc]


@pytest.mark.parametrize("quote", QUOTES, ids=lambda q: f"{q.doc}: {q.text[:40]}")
def test_a_figure_quoted_in_prose_is_in_its_results_file(quote: figures.Quote) -> None:
    assert not figures.unmeasured_quotes([quote])


@pytest.mark.parametrize("doc", DOCS)
def test_no_benchmark_figure_is_copied_by_hand(doc: str) -> None:
    assert not figures.hand_copied(doc, (ROOT / doc).read_text())


def test_the_check_passes_on_the_repository() -> None:
    assert figures.main(["--check"]) == 0


# -- the command on made-up results -------------------------------------------------------------

TRAIN = {
    "when": "2026-11-25 07:37 UTC",
    "machine": "x86_64, 2 cores, 3.11.7",
    "command": "python -m benchmarks.bench_train",
    "layouts": {
        "sequential": {
            "fp32": 50.0,
            "fp32 + channels_last": 70.0,
            "bf16 + channels_last": 100.0,
            "speedup": 2.0,
        }
    },
}


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    for stem, results in (("train", TRAIN), ("latest", SERVICE_RESULTS)):
        (tmp_path / f"{stem}.json").write_text(json.dumps(results))
    return tmp_path


def test_a_stale_region_is_found_and_rewritten_with_its_source(results_dir: Path) -> None:
    text = (
        "# Doc\n\n<!-- figures train-speed train -->\n| old | table |\n<!-- /figures -->\nafter\n"
    )
    assert figures.stale_regions(text, results_dir) == ["train-speed train"]
    new = figures.render(text, results_dir)
    assert figures.stale_regions(new, results_dir) == []
    assert "| sequential | 50.0 clips/s | 70.0 clips/s | 100.0 clips/s | **2.00x** |" in new
    assert (
        "From `benchmarks/results/train.json`: 2026-11-25 07:37 UTC, x86_64, 2 cores, 3.11.7, "
        "`python -m benchmarks.bench_train`."
    ) in new
    assert new.startswith("# Doc\n\n<!-- figures train-speed train -->\n\n")
    assert new.endswith("\n\n<!-- /figures -->\nafter\n")


def test_the_service_table_reads_each_target_on_its_own_run(results_dir: Path) -> None:
    table = figures.render_region("service latest latest", results_dir)
    assert "| measure | `latest.json` | `latest.json` | target |" in table
    # 6.0 ms at 1 client against 4.0 ms in-process; 300 requests/s against a ceiling of 400
    assert "| 2.00 ms: met | 2.00 ms: met | <= 2 ms |" in table
    assert "| 0.75: met | 0.75: met | >= 0.7 |" in table
    assert "| 100: not met; p99 60.0 ms at 100, 250.0 ms at 150 |" in table
    assert "| 7.3 KB: met; 1300 KB |" in table


def test_what_a_run_did_not_measure_says_so(results_dir: Path) -> None:
    partial = {k: v for k, v in SERVICE_RESULTS.items() if k not in ("eager", "predict_httpx")}
    (results_dir / "partial.json").write_text(json.dumps(partial))
    whole = figures.render_region("service latest", results_dir)
    table = figures.render_region("service partial", results_dir)
    assert table.count("| not measured |") == whole.count("| not measured |") + 2


def test_an_unknown_table_or_a_missing_file_says_what_to_do(results_dir: Path) -> None:
    with pytest.raises(FiguresError, match=r"unknown table 'speed'.*known: "):
        figures.render_region("speed train", results_dir)
    with pytest.raises(FiguresError, match="run the benchmark that writes it"):
        figures.render_region("train-speed nowhere", results_dir)


def test_a_figure_typed_outside_a_region_is_found(results_dir: Path) -> None:
    text = (
        "Two replicas served 339 requests/s; p99 was\n92 ms.\n"
        "<!-- figures train-speed train -->\n50.0 clips/s\n<!-- /figures -->\n777 passed.\n"
    )
    found = figures.hand_copied("x.md", text, results_dir)
    assert found == ["339 requests/s", "p99 was 92 ms", "777 passed"]


def test_the_suite_regions_wait_for_a_recorded_run(results_dir: Path) -> None:
    assert figures.render_region("test-suite tests", results_dir) == figures.NOT_RECORDED
    assert figures.render_region("test-files tests tests/x", results_dir) == figures.NOT_RECORDED


# -- the suite's record ---------------------------------------------------------------------------

SUITE = """
import pytest

def test_one(): pass
def test_two(): pass
def test_three(): assert False
@pytest.mark.skip(reason="made up")
def test_four(): pass
@pytest.mark.xfail
def test_five(): assert False
"""


def run_suite(folder: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A small suite of its own, run with the plugin and nothing else."""
    (folder / "pytest.ini").write_text("[pytest]\ntestpaths = t\n")
    (folder / "t").mkdir(exist_ok=True)
    (folder / "t" / "test_made_up.py").write_text(SUITE)
    (folder / "t" / "test_more.py").write_text("def test_six(): pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env |= {"PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env |= {"RECORD_TEST_RUN": str(out)}
    cmd = [sys.executable, "-m", "pytest", "-p", "benchmarks.pytest_record", "-q", *args]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_run_of_the_whole_suite_is_recorded_as_pytest_counts_it(tmp_path: Path) -> None:
    out = tmp_path / "results" / "tests.json"
    run = run_suite(tmp_path, out)
    assert "3 passed, 1 skipped, 1 xfailed" in run.stdout and "1 failed" in run.stdout
    record = json.loads(out.read_text())
    assert record["outcomes"] == {"failed": 1, "passed": 3, "skipped": 1, "xfailed": 1}
    assert record["files"]["t/test_more.py"]["passed"] == 1
    assert record["files"]["t/test_made_up.py"]["failed"] == 1
    assert record["command"] == "python -m pytest -p benchmarks.pytest_record -q"
    assert record["exit_status"] == 1 and record["duration_s"] >= 0
    assert set(record) >= {"when", "machine"}

    text = figures.render_region("test-suite tests", out.parent)
    assert text.startswith("The last recorded run of the whole suite: **3 passed, 1 failed, ")
    assert "1 skipped, 1 xfailed in " in text and "`python -m pytest -p" in text
    table = figures.render_region("test-files tests t/test_made_up.py", out.parent)
    assert "| `t/test_made_up.py` | 2 passed, 1 failed, 1 skipped, 1 xfailed |" in table


@pytest.mark.parametrize("args", [["-k", "one"], ["t/test_more.py"]])
def test_part_of_the_suite_is_not_recorded(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "tests.json"
    run = run_suite(tmp_path, out, *args)
    assert "RECORD_TEST_RUN: not recorded" in run.stdout
    assert not out.exists()


def test_the_gate_table_renders_every_case_and_gate(tmp_path) -> None:
    results = {
        "when": "2026-12-06 19:54 UTC",
        "machine": "x86_64, 2 cores, 3.11.7",
        "command": "python -m benchmarks.bench_gate",
        "gates": ["silero", "energy"],
        "cases": {
            "speech at -25 dBFS": {
                "kind": "speech",
                "windows": 10,
                "silero": 1.0,
                "energy": 1.0,
                "relative": {"silero": 1.0, "energy": 1.0},
            },
            "speech at -55 dBFS": {
                "kind": "speech",
                "windows": 10,
                "silero": 0.9,
                "energy": 0.0,
                "relative": {"silero": 0.9, "energy": 0.0},
            },
            "white noise at -20 dBFS": {
                "kind": "noise",
                "windows": 4,
                "silero": 0.0,
                "energy": 1.0,
            },
        },
        "cost_ms_per_audio_s": {"silero": 2.0, "energy": 0.05},
        "model_cost_ms_per_stream_s": 10.0,
    }
    (tmp_path / "gate.json").write_text(json.dumps(results))
    text = figures.gate_table(["gate"], tmp_path)
    assert "| speech at -55 dBFS | 10 | 0.90 (0.90) | 0.00 (0.00) |" in text
    assert "| white noise at -20 dBFS | 4 | 0.00 | 1.00 |" in text
    assert "so the served detector costs 20% of the model" in text


def test_the_batching_table_has_medians_and_ratios_paired_by_round(tmp_path) -> None:
    def run(p50_1: float, rps_16: float, rows: float) -> dict:
        return {
            "one": {"p50_ms": p50_1},
            "sixteen": {"p50_ms": 50.0, "requests_per_s": rps_16},
            "rows_per_run": rows,
        }

    def round_of(off: float, greedy: float, window: float) -> dict:
        # 1-client p50 scales with the round's speed; throughput at 16 inversely
        return {
            "off": run(off, 1000.0 / off, 1.0),
            "greedy": run(greedy, 1100.0 / off, 1.5),
            "window": run(window, 800.0 / off, 2.0),
        }

    # The machine slows down in round 2: the ratios are paired within a round.
    rounds = [round_of(10.0, 10.0, 15.0), round_of(20.0, 20.0, 30.0), round_of(12.5, 12.5, 18.75)]
    results = {
        "when": "2026-12-07 01:40 UTC",
        "machine": "x86_64, 2 cores, 3.11.7",
        "command": "python -m benchmarks.bench_batching",
        "window_ms": 5.0,
        "summary": bench_batching.summarise(rounds),
    }
    (tmp_path / "batching.json").write_text(json.dumps(results))
    text = figures.batching_table(["batching"], tmp_path)
    assert "| off | 12.5 ms | 50.0 ms / 80.0 requests/s | 1.0 | 1.00 / 1.00 |" in text
    assert "| greedy | 12.5 ms | 50.0 ms / 88.0 requests/s | 1.5 | 1.00 / 1.10 |" in text
    assert "| window (5 ms) | 18.75 ms | 50.0 ms / 64.0 requests/s | 2.0 | 1.50 / 0.80 |" in text
    # a round that differs shows the spread: greedy's 1-client p50 against off's in round 3
    rounds[2]["greedy"]["one"]["p50_ms"] = 25.0
    results["summary"] = bench_batching.summarise(rounds)
    (tmp_path / "batching.json").write_text(json.dumps(results))
    assert "| 1.00 (1.00-2.00) / 1.10 |" in figures.batching_table(["batching"], tmp_path)
    assert "python -m benchmarks.bench_batching" in text


def test_the_corpus_folds_pair_each_held_out_corpus_with_the_paper_recipe(tmp_path: Path) -> None:
    def fold(corpus: str, uar: float, corpora: dict[str, int] | None, epochs: int) -> dict:
        held = {"n": 10, "uar": uar, "arousal_uar": 0.8, "valence_uar": 0.5}
        record = {"protocol": "corpus", "loss": "ce", "epochs_run": epochs}
        return record | {"test": {"by_corpus": {corpus: held}}, "corpora": corpora}

    runs = [
        fold("savee", 0.2, None, 24),  # the paper's three (records without corpora)
        fold("savee", 0.3, {"nemo": 5, "tess": 5}, 12),
        fold("nemo", 0.25, {"savee": 5, "tess": 5}, 12),
    ]
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": runs}))
    table = figures.corpus_folds(["metrics"], tmp_path)
    assert "| savee | 10 | 0.300 | 0.800 | 0.500 | 12 | 0.200 / 0.800 / 0.500, 24 |" in table
    assert "| nemo | 10 | 0.250 | 0.800 | 0.500 | 12 | - |" in table
    assert "| mean of 2 | | 0.275 |" in table


def test_the_held_out_speakers_are_the_released_models_on_the_new_corpora(tmp_path: Path) -> None:
    def released(loss: str, uar: float, **extra: Any) -> dict:
        parts = {
            c: {"n": 3, "uar": uar, "arousal_uar": 0.8, "valence_uar": 0.5, "classes": ["a", "b"]}
            for c in ("nemo", "savee")
        }
        record = {"protocol": "random", "loss": loss, "onnx": f"ser-{loss}.onnx", "epochs_run": 9}
        corpora = {"nemo": 10, "savee": 10}
        return record | {"test": {"by_corpus": parts}, "corpora": corpora, "split_file": "s.csv"}

    runs = [
        released("l1", 0.3),
        released("ce", 0.6),
        released("ce", 0.1) | {"onnx": None},  # a fold or an unexported run: not released
        released("bce", 0.9) | {"corpora": {"savee": 10}},  # the paper's corpora only
    ]
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": runs}))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "s.csv").write_text(
        "path,dataset,speaker,emotion,split,utterance\n"
        + "".join(f"n{i}.opus,nemo,{sp},sad,test,\n" for i, sp in enumerate("xyx"))
        + "n3.opus,nemo,w,sad,train,\ns0.opus,savee,DC,sad,test,\n"
    )
    table = figures.held_out_speakers(["metrics"], tmp_path)
    assert "| CE: UAR / arousal / valence | L1: UAR / arousal / valence |" in table
    # nemo: two test speakers (w only trains), chance 1/2; savee is the paper's: not a row
    assert "| nemo | 2 | 3 | 0.50 | 0.600 / 0.800 / 0.500 | 0.300 / 0.800 / 0.500 |" in table
    assert "| savee |" not in table and "BCE" not in table
    assert "epochs: CE 9, L1 9" in table
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": runs[2:]}))
    with pytest.raises(figures.FiguresError, match="no released model trained beyond"):
        figures.held_out_speakers(["metrics"], tmp_path)


def test_the_releases_quote_the_paper_split_of_the_model_file_that_ships(tmp_path: Path) -> None:
    by_corpus = {"nemo": {"uar": 0.444}, "savee": {"uar": 0.9}}
    record = {"protocol": "random", "loss": "ce", "onnx": "ser-ce.onnx", "epochs_run": 32}
    record |= {"corpora": {"nemo": 10, "savee": 10}, "test": {"by_corpus": by_corpus}}
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": [record]}))
    (tmp_path / "ser-ce.onnx").write_bytes(b"model")
    paper = {"accuracy": 0.8429, "accuracy_by_corpus": {"ravdess": 0.6084, "savee": 0.625}}
    entry = {"model": "ser-ce.onnx", "split": "splits/random.csv", "part": "test", "metrics": paper}
    entry["model_sha256"] = hashlib.sha256(b"model").hexdigest()
    evaluations = {"evaluations": {"ser-ce.onnx on splits/random.csv test": entry}}
    (tmp_path / "evaluations.json").write_text(json.dumps(evaluations))
    conditions = {"-20 dB": {"label_changed": 0.055}, "+10 dB": {"label_changed": 0.0255}}
    gain = {"models": {"ser-ce.onnx": {"conditions": conditions}}}
    (tmp_path / "gain.json").write_text(json.dumps(gain))
    stems = ["metrics", "evaluations", "gain"]
    table = figures.releases(stems, tmp_path)
    row = "| `ser-ce` | 2 | 32 | 84.29 % (60.8 % / 62.5 %) | Polish 0.44 | 5.5 / 2.5 % |"
    assert row in table
    # the model retrained and not scored again: the figures would be another model's
    (tmp_path / "ser-ce.onnx").write_bytes(b"retrained")
    with pytest.raises(figures.FiguresError, match=r"scored another ser-ce\.onnx: run `python -m"):
        figures.releases(stems, tmp_path)
    (tmp_path / "evaluations.json").write_text(json.dumps({"evaluations": {}}))
    with pytest.raises(figures.FiguresError, match=r"--record models/evaluations\.json"):
        figures.releases(stems, tmp_path)


def test_the_speaker_folds_pair_each_corpus_with_the_paper_folds_of_the_same_speakers(
    tmp_path: Path,
) -> None:
    def fold(k: int, uars: dict[str, float], corpora: dict[str, int] | None, epochs: int) -> dict:
        parts = {
            c: {"n": 10, "uar": u, "arousal_uar": 0.8, "valence_uar": 0.5} for c, u in uars.items()
        }
        record = {"protocol": "speaker", "loss": "ce", "fold": k, "epochs_run": epochs}
        return record | {"test": {"by_corpus": parts}, "corpora": corpora}

    seven = {"nemo": 50, "ravdess": 50, "savee": 50}
    runs = [
        fold(0, {"ravdess": 0.5, "savee": 0.3}, None, 24),  # the paper's three (no corpora)
        fold(1, {"ravdess": 0.4, "savee": 0.4}, None, 24),
        fold(0, {"ravdess": 0.6, "savee": 0.2, "nemo": 0.7}, seven, 12),
        fold(1, {"ravdess": 0.6, "savee": 0.6, "nemo": 0.5}, seven, 12),
        fold(0, {"ravdess": 0.9}, None, 24) | {"loss": "bce"},  # another loss: not here
    ]
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": runs}))
    table = figures.speaker_folds(["metrics"], tmp_path)
    # ravdess: 0.6 and 0.6 against 0.5 and 0.4, changes +0.1 and +0.2
    assert "| ravdess | 2 | 20 | 0.600 ± 0.000 | 0.800 ± 0.000 | 0.500 ± 0.000 | 12 " in table
    assert "| 0.450 ± 0.071 | +0.150 ± 0.071 (up on 2 of 2) |" in table
    # savee: 0.2 and 0.6 against 0.3 and 0.4, changes -0.1 and +0.2
    assert "| savee | 2 | 20 | 0.400 ± 0.283 |" in table
    assert "| 0.350 ± 0.071 | +0.050 ± 0.212 (up on 1 of 2) |" in table
    assert "| nemo | 2 | 20 | 0.600 ± 0.141 |" in table and "| 12 | - | - |" in table
    assert "ran 24 epochs" in table
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": runs[:2]}))
    with pytest.raises(figures.FiguresError, match="no speaker fold trained beyond"):
        figures.speaker_folds(["metrics"], tmp_path)


def test_the_speaker_folds_pair_validation_speakers_with_ablation_rows_of_the_same_length(
    tmp_path: Path,
) -> None:
    from training.ablation import base_name
    from training.config import RELEASE_FEATURES, TrainConfig

    config = TrainConfig(epochs=12)
    base = base_name(RELEASE_FEATURES, config)

    def grown(k: int, val: dict[str, float]) -> dict:
        test = {c: {"n": 10, "uar": 0.5, "arousal_uar": 0.8, "valence_uar": 0.5} for c in val}
        record = {"protocol": "speaker", "loss": "ce", "fold": k, "epochs_run": 12}
        return record | {
            "corpora": {"nemo": 5, "ravdess": 5, "savee": 5, "tess": 5},
            "test": {"by_corpus": test},
            "val": {"by_corpus": {c: {"accuracy": a} for c, a in val.items()}},
            "train_config": config.to_dict(),
            "feature_config": RELEASE_FEATURES.to_dict(),
        }

    def baseline(k: int, val: dict[str, float], epochs: int = 12, **extra: Any) -> dict:
        row = {"protocol": "speaker", "variant": "baseline", "fold": k, "epochs": epochs}
        return row | {"base": base, "val_accuracy_by_corpus": val, "train_config": {}} | extra

    runs = [
        grown(0, {"ravdess": 0.4, "savee": 0.4, "tess": 1.0}),
        grown(1, {"ravdess": 0.3, "savee": 0.5, "tess": 1.0}),
    ]
    rows = [
        baseline(0, {"ravdess": 0.5, "savee": 0.2, "tess": 1.0}),
        baseline(1, {"ravdess": 0.5, "savee": 0.2, "tess": 1.0}),
        baseline(0, {"ravdess": 0.9, "savee": 0.9, "tess": 1.0}, epochs=24),  # another length
        baseline(1, {"ravdess": 0.9, "savee": 0.9, "tess": 1.0}, base="level none, augment none"),
        baseline(0, {"ravdess": 0.9, "savee": 0.9, "tess": 1.0}, selection="nemo+ravdess"),
    ]
    (tmp_path / "metrics.json").write_text(json.dumps({"runs": runs}))
    (tmp_path / "ablation.json").write_text(json.dumps({"ablation": rows}))
    table = figures.speaker_folds(["metrics", "ablation"], tmp_path)
    # ravdess: 0.4 and 0.3 against 0.5 and 0.5; savee: 0.4 and 0.5 against 0.2 and 0.2
    assert (
        "| ravdess | 2 | 0.350 ± 0.071 | 0.500 ± 0.000 | -0.150 ± 0.071 (up on 0 of 2) |" in table
    )
    assert "| savee | 2 | 0.450 ± 0.071 | 0.200 ± 0.000 | +0.250 ± 0.071 (up on 2 of 2) |" in table
    assert "2 of them trained with the plain loss" in table  # rows without label sets
    assert "validation speakers" not in figures.speaker_folds(["metrics"], tmp_path)


def test_the_corpus_ablation_quotes_one_selections_rows(tmp_path: Path) -> None:
    def row(fold: int, corpus: str, variant: str, uar: float, selection: str) -> dict:
        held = {"n": 10, "uar": uar, "arousal_uar": 0.6, "valence_uar": 0.4}
        return {
            "selection": selection,
            "protocol": "corpus",
            "fold": fold,
            "variant": variant,
            "epochs": 6,
            "val": {"accuracy": 0.5},
            "held_out": {"n": 10, "by_corpus": {corpus: held}},
        }

    grown = "nemo+ravdess+savee+tess"
    rows = [
        row(0, "nemo", "baseline", 0.20, grown),
        row(0, "nemo", "all-labels", 0.30, grown),
        row(1, "ravdess", "baseline", 0.40, grown),
        row(1, "ravdess", "all-labels", 0.40, grown),
        row(0, "ravdess", "all-labels", 0.90, "ravdess+savee+tess"),  # another selection's
    ]
    (tmp_path / "ablation.json").write_text(json.dumps({"ablation": rows}))
    table = figures.corpus_ablation(["ablation", grown], tmp_path)
    assert "| 0 | nemo | all-labels | 50.00 | 0.300 (+0.100) |" in table
    assert "0.900" not in table
    # all-labels over both folds: changes +0.10 and 0.00 (mean +0.05, sd 0.071)
    assert "| all-labels | 6 | 0,1 | 0.350 (+0.050 +- 0.071) |" in table
    assert "python -m training ablate --protocol corpus" in table
    with pytest.raises(figures.FiguresError, match="no corpus-fold row scored on tess"):
        figures.corpus_ablation(["ablation", "tess"], tmp_path)
