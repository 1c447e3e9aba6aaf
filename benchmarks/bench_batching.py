"""The micro-batcher's modes side by side: which one a provider should default to.

Each mode (``SER_BATCHING``, app/engine.py) serves the same 3.5 s WAV uploads from the lean
client (:mod:`benchmarks.upload_load`) at 1 client and at 16:

- ``off``: each request's rows run on its own lane thread (the CPU default);
- ``greedy``: one run at a time per model; a lone request runs at once, and the requests that
  queued during a run go together in the next (the CUDA default);
- ``window``: the first request waits up to ``--window-ms`` for others.

The modes alternate over ``--rounds`` rounds, each round in a rotated order, one fresh server
per mode and round; the table has each mode's median over the rounds and its ratios to ``off``
from the same rounds (median, and lowest to highest in brackets). Rows per run (the
``ser_inference_batch_size`` histogram over the 16-client load) shows how much each mode really
batched.

Usage (from the repository root, on an otherwise idle machine; about 3 minutes)::

    .venv/bin/python -m benchmarks.bench_batching

Results go to ``benchmarks/results/batching.json`` and ``batching.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import io
import statistics
from pathlib import Path
from typing import Any, Final

import httpx
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from app.settings import REPO_MODELS_DIR
from benchmarks.bench_service import free_port, lean_predict, service, test_clip
from benchmarks.record import RESULTS, header, write

MODES: Final[tuple[str, ...]] = ("off", "greedy", "window")


def batch_rows(port: int, model: str) -> tuple[float, float]:
    """(rows, runs) the server's batch-size histogram has counted for ``model`` so far."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    seen = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name != "ser_inference_batch_size":
            continue
        for sample in family.samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind in seen and sample.labels.get("model") == model:
                seen[kind] = sample.value
    return seen["sum"], seen["count"]


def measure(
    models_dir: Path, mode: str, window_ms: float, body: bytes, model: str, requests: int
) -> dict[str, Any]:
    """One fresh server in ``mode``: 1 client, then 16, and the rows per run under the 16."""
    port = free_port()
    settings: dict[str, Any] = {"batching": mode}
    if mode == "window":
        settings["max_batch_wait_ms"] = window_ms
    with service(models_dir, port, **settings):
        one = lean_predict([port], body, model, requests, 1)
        rows_before, runs_before = batch_rows(port, model)
        many = lean_predict([port], body, model, 2 * requests, 16)
        rows_after, runs_after = batch_rows(port, model)
    runs = runs_after - runs_before
    return {
        "one": one,
        "sixteen": many,
        "rows_per_run": round((rows_after - rows_before) / runs, 2) if runs else None,
    }


def _ratios(rounds: list[dict[str, dict[str, Any]]], mode: str, load: str, key: str) -> list:
    """[median, lowest, highest] over the rounds of ``mode``'s figure / ``off``'s, each round
    against its own ``off``."""
    ratios = [r[mode][load][key] / r["off"][load][key] for r in rounds]
    return [round(x, 2) for x in (statistics.median(ratios), min(ratios), max(ratios))]


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per mode: medians over the rounds, and medians of the per-round ratios to ``off``."""
    summary: dict[str, dict[str, float]] = {}
    for mode in rounds[0]:

        def median(pick: Any, of: str = mode) -> float:
            return round(statistics.median(pick(r[of]) for r in rounds), 2)

        summary[mode] = {
            "p50_ms_1": median(lambda m: m["one"]["p50_ms"]),
            "p50_ms_16": median(lambda m: m["sixteen"]["p50_ms"]),
            "requests_per_s_16": median(lambda m: m["sixteen"]["requests_per_s"]),
            "rows_per_run_16": median(lambda m: m["rows_per_run"] or 0.0),
            "p50_1_vs_off": _ratios(rounds, mode, "one", "p50_ms"),
            "throughput_16_vs_off": _ratios(rounds, mode, "sixteen", "requests_per_s"),
        }
    return summary


def _spread(ratio: list[float]) -> str:
    median, low, high = ratio
    return f"{median:.2f}" if low == high else f"{median:.2f} ({low:.2f}-{high:.2f})"


def table(results: dict[str, Any]) -> str:
    """The modes x measures table (docs/performance.md renders it with ``figures``)."""
    lines = [
        "| mode | 1 client: p50 | 16 clients: p50 / throughput | rows per run at 16 "
        "| vs off: p50 at 1 client / throughput at 16 |",
        "|---|---|---|---|---|",
    ]
    for mode, s in results["summary"].items():
        name = f"window ({results['window_ms']:g} ms)" if mode == "window" else mode
        lines.append(
            f"| {name} | {s['p50_ms_1']} ms | {s['p50_ms_16']} ms / {s['requests_per_s_16']} "
            f"requests/s | {s['rows_per_run_16']} | {_spread(s['p50_1_vs_off'])} / "
            f"{_spread(s['throughput_16_vs_off'])} |"
        )
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "# Micro-batching modes",
            "",
            f"{results['when']}, {results['machine']}; `{results['command']}`; model "
            f"`{results['model']}`, {results['rounds']} rounds (medians), "
            f"{results['requests']} requests at 1 client and twice that at 16 per round.",
            "",
            table(results),
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_MODELS_DIR)
    parser.add_argument("--model", default="ce")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "batching")
    args = parser.parse_args()

    buf = io.BytesIO()
    sf.write(buf, test_clip(3.5), 16_000, subtype="PCM_16", format="WAV")
    body = buf.getvalue()
    rounds: list[dict[str, dict[str, Any]]] = []
    for k in range(args.rounds):
        order = MODES[k % len(MODES) :] + MODES[: k % len(MODES)]
        measured = {
            mode: measure(args.models_dir, mode, args.window_ms, body, args.model, args.requests)
            for mode in order
        }
        rounds.append({mode: measured[mode] for mode in MODES})
    results = {
        **header("bench_batching"),
        "model": args.model,
        "rounds": args.rounds,
        "requests": args.requests,
        "window_ms": args.window_ms,
        "runs": rounds,
        "summary": summarise(rounds),
    }
    write(args.out, results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
