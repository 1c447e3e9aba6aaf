"""The client's result types and the ``ser`` output, from JSON written here (no server)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from app.labels import LABELS
from ser_client import Prediction, StreamPrediction, StreamSummary
from ser_client.cli import Outcome, _live_line, _print_table, _summary_line, _write_csv

HAPPY = {label: 0.0 for label in LABELS} | {"happy": 0.75, "calm": 0.25}


def predict_body(**scores: float) -> dict[str, Any]:
    segment = {"start_s": 0.5, "end_s": 4.0, "label": "happy", "confidence": 0.75}
    return {
        "label": "happy",
        "confidence": 0.75,
        "probabilities": HAPPY,
        "model": {"name": "ser-ce", "loss": "ce", "version": "1.0.0"},
        "duration_s": 4.5,
        "segments": [{**segment, "probabilities": HAPPY, **scores}],
        **scores,
    }


def window(speech: bool, **fields: Any) -> dict[str, Any]:
    return {"index": 3, "start_s": 1.5, "end_s": 5.0, "speech": speech, "latency_ms": 9.0} | fields


def test_prediction_and_segments_carry_arousal_and_valence() -> None:
    result = Prediction.from_json(predict_body(arousal=-0.0675, valence=0.9225))
    [segment] = result.segments
    assert (result.arousal, result.valence) == (-0.0675, 0.9225)
    assert (segment.arousal, segment.valence) == (-0.0675, 0.9225)


def test_a_server_without_the_scores_still_parses_and_prints() -> None:
    old = Prediction.from_json(predict_body())
    assert old.arousal is None and old.segments[0].valence is None
    table, table_csv = io.StringIO(), io.StringIO()
    _print_table([Outcome("a.wav", result=old)], windows=True, out=table)
    _write_csv([Outcome("a.wav", result=old)], windows=True, out=table_csv)
    head, row, segment = table.getvalue().splitlines()
    assert head.split()[3:5] == ["arousal", "valence"]
    assert row.split()[3:5] == ["-", "-"] and segment.split()[-2:] == ["-", "-"]
    rows = list(csv.DictReader(io.StringIO(table_csv.getvalue())))
    assert [(r["arousal"], r["valence"]) for r in rows] == [("", ""), ("", "")]


def test_csv_columns_are_the_labels_the_service_answered_with() -> None:
    """The client keeps no label list: the columns are the response's labels, in its order."""
    refused = Outcome("bad.wav", error="415 unsupported_audio: not audio")
    answered = Outcome("a.wav", result=Prediction.from_json(predict_body()))
    fixed = ["file", "start_s", "end_s", "label", "confidence"]
    scores = ["arousal", "valence", "error"]
    for outcomes, labels in [([refused, answered], list(LABELS)), ([refused], [])]:
        out = io.StringIO()
        _write_csv(outcomes, windows=False, out=out)
        head, *rows = list(csv.reader(io.StringIO(out.getvalue())))
        assert head == [*fixed, *labels, *scores]
        assert all(len(row) == len(head) for row in rows)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["file"], row["error"]) == ("bad.wav", "415 unsupported_audio: not audio")


def test_stream_messages_carry_raw_and_smoothed_scores() -> None:
    scores = {"arousal": 0.5, "valence": -0.25, "smoothed_arousal": 0.4, "smoothed_valence": -0.2}
    speech = StreamPrediction.from_json(
        window(True, label="angry", confidence=0.6, probabilities=HAPPY, smoothed=HAPPY)
        | {"smoothed_label": "angry", **scores}
    )
    assert (speech.arousal, speech.valence) == (0.5, -0.25)
    assert (speech.smoothed_arousal, speech.smoothed_valence) == (0.4, -0.2)
    line = _live_line(speech)
    assert line.endswith(
        "angry     0.600  arousal +0.50 valence -0.25  "
        "smoothed: angry     arousal +0.40 valence -0.20"
    )

    nulls = dict.fromkeys(["label", "confidence", "probabilities", "smoothed", *scores])
    silent = StreamPrediction.from_json(window(False, smoothed_label=None, **nulls))
    assert (silent.arousal, silent.valence, silent.smoothed_arousal) == (None, None, None)
    assert _live_line(silent).endswith("(no speech)")


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        (
            {"arousal": 0.1234, "valence": -0.5},
            "summary: angry 0.600 (arousal +0.12 valence -0.50)",
        ),
        ({"arousal": None, "valence": None}, "summary: angry 0.600 over"),
    ],
)
def test_the_summary_line(scores: dict[str, float | None], expected: str) -> None:
    summary = StreamSummary.from_json(
        {
            "session_id": "s",
            "model": "ce",
            "duration_s": 6.0,
            "windows": 6,
            "speech_windows": 5,
            "label": "angry",
            "confidence": 0.6,
            "probabilities": HAPPY,
            **scores,
        }
    )
    assert (summary.arousal, summary.valence) == (scores["arousal"], scores["valence"])
    assert _summary_line(summary).startswith(expected)
