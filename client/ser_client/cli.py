"""``ser``: the service from a terminal.

::

    ser predict clips/ more.wav [--model ce] [--json | --csv] [--windows | --utterances]
    ser stream clip.wav [--fast]        # each window's prediction as a live line
    ser stream --mic [--seconds 30]     # the microphone (needs the `mic` extra)
    ser models [--json]                 # the served models and the corpora each learnt from

``--url`` (or ``$SER_URL``) names the service, default ``http://127.0.0.1:8000``; it may come
before or after the subcommand. Exit status: 0 when everything was classified, 1 when some file
or the stream was refused (the reason is printed), 2 when the service cannot be reached or the
arguments are wrong, 141 (as if killed by SIGPIPE, silently) when the reader of the output went
away, e.g. ``ser predict folder/ --csv | head -3``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from ser_client.api import DEFAULT_URL, AsyncClient, Client
from ser_client.cli_help import DefaultsHelpFormatter
from ser_client.results import (
    Prediction,
    Segment,
    ServiceError,
    StreamPrediction,
    StreamSummary,
)
from ser_client.sources import (
    AudioSource,
    MicrophoneError,
    MicrophoneSource,
    UnreadableFileError,
    file_source,
)


@dataclass
class Outcome:
    path: str
    result: Prediction | None = None
    error: str | None = None


# ---------------------------------------------------------------- ser predict


async def _predict_all(
    paths: Sequence[str],
    url: str,
    model: str | None,
    concurrency: int,
    progress: TextIO | None,
    segments: str | None = None,
) -> list[Outcome]:
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def one(client: AsyncClient, path: str) -> Outcome:
        nonlocal done
        async with limit:
            try:
                outcome = Outcome(path, result=await client.predict(path, model, segments))
            except ServiceError as e:
                outcome = Outcome(path, error=f"{e.status} {e.code}: {e.message}")
            except OSError as e:
                outcome = Outcome(path, error=f"cannot read the file: {e}")
        done += 1
        if progress is not None:
            bar = "#" * (20 * done // len(paths))
            progress.write(f"\r[{bar:<20}] {done}/{len(paths)} {Path(path).name[:40]:<40}")
            progress.flush()
        return outcome

    async with AsyncClient(url) as client:
        outcomes = await asyncio.gather(*(one(client, p) for p in paths))
    if progress is not None:
        progress.write("\n")
    return list(outcomes)


def _score(value: float | None, width: int = 7) -> str:
    """An arousal or valence score, signed, 3 decimals; "-" when there is none."""
    return f"{'-':>{width}}" if value is None else f"{value:+{width}.3f}"


def _print_table(outcomes: list[Outcome], windows: bool, out: TextIO) -> None:
    width = max([len(o.path) for o in outcomes] + [4])
    out.write(
        f"{'file':<{width}}  {'label':<9}  {'conf':>6}  {'arousal':>7}  {'valence':>7}  "
        f"{'seconds':>8}  windows\n"
    )
    for o in outcomes:
        if o.result is None:
            out.write(f"{o.path:<{width}}  error: {o.error}\n")
            continue
        r = o.result
        out.write(
            f"{o.path:<{width}}  {r.label:<9}  {r.confidence:6.3f}  {_score(r.arousal)}  "
            f"{_score(r.valence)}  {r.duration_s:8.2f}  {len(r.segments)}\n"
        )
        if windows:
            for s in r.segments:
                span = f"{s.start_s:.2f}-{s.end_s:.2f} s"
                if s.label is None or s.confidence is None:
                    out.write(f"{'':<{width}}    {span:>16}  (no speech)\n")
                    continue
                out.write(
                    f"{'':<{width}}    {span:>16}  {s.label:<9} {s.confidence:6.3f}  "
                    f"{_score(s.arousal)}  {_score(s.valence)}\n"
                )


def _labels(outcomes: list[Outcome]) -> list[str]:
    """The labels the service answered with, in its order (that of its models' outputs).

    The client keeps no label list of its own: the service is the one that knows its models.
    """
    labels: dict[str, None] = {}
    for o in outcomes:
        if o.result is not None:
            labels |= dict.fromkeys(o.result.probabilities)
    return list(labels)


def _write_csv(outcomes: list[Outcome], windows: bool, out: TextIO) -> None:
    """A probability column per label; the two scores derived from them follow them."""
    labels = _labels(outcomes)
    head = ["file", "start_s", "end_s", "label", "confidence", *labels, "arousal", "valence"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*head, "error"])
    for o in outcomes:
        if o.result is None:
            writer.writerow([o.path] + [""] * (len(head) - 1) + [o.error])
            continue
        r = o.result
        rows: list[tuple[Any, Any, Prediction | Segment]] = [("", "", r)]
        if windows:
            rows += [(s.start_s, s.end_s, s) for s in r.segments]
        for start, end, p in rows:
            probabilities = [p.probabilities.get(k) for k in labels]
            cells = [o.path, start, end, p.label, p.confidence, *probabilities]
            writer.writerow([*cells, p.arousal, p.valence, ""])


def _write_json(outcomes: list[Outcome], out: TextIO) -> None:
    items = [
        {"file": o.path, **({"error": o.error} if o.result is None else {"result": o.result.raw})}
        for o in outcomes
    ]
    json.dump(items, out, indent=1)
    out.write("\n")


AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".opus", ".oga", ".mp3", ".m4a", ".mp4", ".aac", ".webm", ".mka"}
)


def expand(paths: Sequence[str]) -> list[str]:
    """Files as given; a folder becomes the audio files below it (by extension, sorted)."""
    files: list[str] = []
    for path in paths:
        folder = Path(path)
        if folder.is_dir():
            found = (p for p in folder.rglob("*") if p.is_file())
            files += sorted(str(p) for p in found if p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(path)
    return files


def run_predict(args: argparse.Namespace) -> int:
    files = expand(args.files)
    if not files:
        print("error: no audio files found in " + ", ".join(args.files), file=sys.stderr)
        return 2
    progress = sys.stderr if sys.stderr.isatty() and not args.quiet else None
    segments = "utterances" if args.utterances else None
    outcomes = asyncio.run(
        _predict_all(files, args.url, args.model, args.concurrency, progress, segments)
    )
    each = args.windows or args.utterances
    if args.format == "json":
        _write_json(outcomes, sys.stdout)
    elif args.format == "csv":
        _write_csv(outcomes, each, sys.stdout)
    else:
        _print_table(outcomes, each, sys.stdout)
    return 1 if any(o.result is None for o in outcomes) else 0


# ---------------------------------------------------------------- ser stream


def _affect(arousal: float | None, valence: float | None) -> str:
    if arousal is None or valence is None:
        return ""
    return f"arousal {arousal:+.2f} valence {valence:+.2f}"


def _live_line(event: StreamPrediction) -> str:
    span = f"{event.start_s:7.2f}-{event.end_s:7.2f} s"
    if not event.speech:
        return f"{span}  (no speech)"
    parts = [
        span,
        f"{event.label:<9} {event.confidence:.3f}",
        _affect(event.arousal, event.valence),
    ]
    if event.smoothed_label:
        smoothed = _affect(event.smoothed_arousal, event.smoothed_valence)
        parts.append(f"smoothed: {event.smoothed_label:<9} {smoothed}".rstrip())
    return "  ".join(part for part in parts if part)


def _summary_line(event: StreamSummary) -> str:
    label = event.label or "no speech"
    confidence = "" if event.confidence is None else f" {event.confidence:.3f}"
    affect = _affect(event.arousal, event.valence)
    return (
        f"summary: {label}{confidence}{f' ({affect})' if affect else ''} over "
        f"{event.speech_windows} speech window(s) of {event.windows}, "
        f"{event.duration_s:.2f} s of audio"
    )


async def _stream(source: AudioSource, args: argparse.Namespace, out: TextIO) -> int:
    async with AsyncClient(args.url) as client:
        async for event in client.stream(source, model=args.model):
            if args.json:
                kind = "summary" if isinstance(event, StreamSummary) else "prediction"
                out.write(json.dumps({"type": kind, **vars(event)}))
            elif isinstance(event, StreamSummary):
                out.write(_summary_line(event))
            else:
                out.write(_live_line(event))
            out.write("\n")
            out.flush()
    return 0


def run_stream(args: argparse.Namespace) -> int:
    if (args.file is None) == (not args.mic):
        print("error: give a FILE or --mic", file=sys.stderr)
        return 2
    try:
        source: AudioSource = (
            MicrophoneSource(seconds=args.seconds)
            if args.mic
            else file_source(args.file, chunk_s=args.chunk_ms / 1000, realtime=not args.fast)
        )
    except (MicrophoneError, UnreadableFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_stream(source, args, sys.stdout))
    except ServiceError as e:
        print(f"error: the service refused the stream: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- ser models


def _corpora_cell(corpora: dict[str, int]) -> str:
    if not corpora:
        return "(not recorded)"
    total = sum(corpora.values())
    return f"{total} clips: " + ", ".join(f"{name} {n}" for name, n in corpora.items())


def _test_accuracy(model: dict[str, Any]) -> str:
    value = (model.get("metrics") or {}).get("test", {}).get("accuracy")
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def models_table(listing: dict[str, Any]) -> str:
    """``/v1/models`` as text: a line per model, the default marked with ``*``."""
    rows = [("", "model", "provider", "T", "test acc (own split)", "learnt from")]
    for m in listing.get("models", []):
        rows.append(
            (
                "*" if m.get("default") else "",
                str(m.get("name", m.get("key", "?"))),
                str(m.get("provider", "?")),
                f"{m.get('temperature', 1.0):.3f}",
                _test_accuracy(m),
                _corpora_cell(m.get("training_corpora") or {}),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def run_models(args: argparse.Namespace) -> int:
    try:
        with Client(args.url) as client:
            listing = client.models()
    except ServiceError as e:
        print(f"error: the service refused: {e}", file=sys.stderr)
        return 1
    print(json.dumps(listing, indent=1) if args.json else models_table(listing))
    return 0


# ---------------------------------------------------------------- main

SIGPIPE_EXIT: Final[int] = 128 + signal.SIGPIPE  # 141: what a shell reports for `ser ... | head`


def _add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """The options every command takes, before or after the subcommand's name.

    In a subcommand their default is SUPPRESS, so that a value given before the subcommand
    (``ser --url U predict ...``) is not overwritten by the subcommand's default.
    """
    if in_subcommand:
        parser.add_argument(
            "--url",
            default=argparse.SUPPRESS,
            help=f"the service; $SER_URL sets the default (default: {DEFAULT_URL})",
        )
    else:
        parser.add_argument(
            "--url", default=DEFAULT_URL, help="the service; $SER_URL sets the default"
        )


def _subcommand(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter
    )
    _add_global_options(parser, in_subcommand=True)
    return parser


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="ser",
        description=__doc__.split("\n")[0].replace("``", ""),
        epilog="Global options may also follow the subcommand: ser predict clip.wav --url URL.",
        formatter_class=DefaultsHelpFormatter,
    )
    _add_global_options(root, in_subcommand=False)
    sub = root.add_subparsers(dest="command", required=True, metavar="{predict,stream,models}")

    p = _subcommand(sub, "predict", "classify recordings, one upload each")
    p.add_argument(
        "files", nargs="+", help="audio files (WAV, FLAC, OGG, MP3, M4A, WebM) or folders of them"
    )
    p.add_argument(
        "--model", default=None, help="ce or ser-ce, bce, smoothl1, l1 (default: the server's)"
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        help="print a JSON list: each file's name and the service's whole response",
    )
    kind.add_argument(
        "--csv",
        dest="format",
        action="store_const",
        const="csv",
        help="print CSV: a row per file (per window or utterance too with --windows or "
        "--utterances), each label's probability",
    )
    each = p.add_mutually_exclusive_group()
    each.add_argument("--windows", action="store_true", help="also each 3.5 s window's result")
    each.add_argument(
        "--utterances",
        action="store_true",
        help="also each utterance's result (speech between pauses, e.g. each turn of a call)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="uploads at once")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict, format="table")

    s = _subcommand(sub, "stream", "stream a file or the microphone, a line per prediction")
    s.add_argument("file", nargs="?", default=None, help="an audio file (or use --mic)")
    s.add_argument("--mic", action="store_true", help="record from the default microphone")
    s.add_argument(
        "--seconds", type=float, default=None, help="--mic: stop after this long (default: Ctrl-C)"
    )
    s.add_argument("--fast", action="store_true", help="send the file as fast as possible")
    s.add_argument("--chunk-ms", type=float, default=100.0, help="audio per WebSocket frame")
    s.add_argument(
        "--model", default=None, help="ce or ser-ce, bce, smoothl1, l1 (default: the server's)"
    )
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=run_stream)

    m = _subcommand(sub, "models", "the served models: provider, scores, the corpora each learnt")
    m.add_argument("--json", action="store_true", help="print /v1/models as it is")
    m.set_defaults(func=run_models)
    return root


def _quiet_stdout() -> None:
    """The reader of stdout has gone (``| head``): point stdout at /dev/null so that Python's
    own flush at exit does not fail on the closed pipe a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # an OSError, but the service is not the one that went away
        _quiet_stdout()
        return SIGPIPE_EXIT
    except (httpx.TransportError, OSError) as e:
        print(f"error: cannot reach the service at {args.url}: {e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
