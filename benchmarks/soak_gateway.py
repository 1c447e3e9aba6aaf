"""Soak through the real gateway: mixed /predict and streams, a replica killed and restarted.

Debian's nginx with the repository's gateway config (started as ``tests/deploy/test_gateway.py``
starts it) in front of two ``python -m app`` replicas. Client threads loop for ``--duration-s``:
``POST /predict`` of a 2 s clip, ``GET /v1/models``, and WebSocket streams (start, 5 s of audio
in 100 ms chunks, stop). Halfway, one replica is SIGKILLed and restarted on the same port.

Recorded: requests and failures per kind (a failure is anything but 200; a transport error of
a request that was in flight at the moment of the kill counts as ``cut_<error>``: nginx retries
on another replica only while it has sent the client nothing, and a response already under way
from the killed replica cannot be resent, so at most one such request per client thread is
expected), p50/p99 latency,
streams by outcome (``summary`` then close 1000; closed with another code; left without a close
within 30 s, which must never happen), and each replica's RSS after warm-up (the first fifth of
the run) and at the end. Results: ``benchmarks/results/soak.json`` and ``soak.md``.

Usage (from the repository root; needs nginx and the training extra for the test models)::

    python -m benchmarks.soak_gateway [--duration-s 300] [--clients 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from benchmarks.record import RESULTS, write
from tests.conftest import export_test_models, synth_speechlike, wav_bytes
from tests.deploy.conftest import GATEWAY_TEMPLATE, render_template
from tests.deploy.test_gateway import free_port, run_gateway, stop, wait_until
from tests.live import status_kb

STREAM_CLOSE_TIMEOUT_S = 30.0


class Tally:
    """Thread-safe outcomes and latencies per kind of request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.killed_at: float | None = None  # time.monotonic() of the SIGKILL

    def in_flight_at_kill(self, started: float, ended: float) -> bool:
        return self.killed_at is not None and started <= self.killed_at <= ended

    def add(self, kind: str, outcome: str, seconds: float) -> None:
        with self.lock:
            self.outcomes[kind][outcome] += 1
            if outcome == "ok":
                self.latency_ms[kind].append(seconds * 1000.0)


def start_replica(models_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SER_MODELS_DIR": str(models_dir),
        "SER_PROVIDERS": "cpu",
        "SER_INTRA_OP_THREADS": "1",
        "FORWARDED_ALLOW_IPS": "*",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024.0


def predict_loop(url: str, audio: bytes, tally: Tally, until: float) -> None:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        while time.monotonic() < until:
            for kind, call in (
                ("predict", lambda: client.post("/predict", files={"file": ("a.wav", audio)})),
                ("models", lambda: client.get("/v1/models")),
            ):
                started = time.monotonic()
                try:
                    status = call().status_code
                    outcome = "ok" if status == 200 else f"status_{status}"
                except httpx.HTTPError as e:
                    cut = tally.in_flight_at_kill(started, time.monotonic())
                    outcome = f"cut_{type(e).__name__}" if cut else type(e).__name__
                tally.add(kind, outcome, time.monotonic() - started)


def one_stream(ws_url: str, pcm: bytes, source: str) -> str:
    """One session at real time (100 ms chunks every 100 ms), like a microphone."""
    start = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
    with connect(ws_url, open_timeout=10, close_timeout=5, source_address=(source, 0)) as ws:
        ws.send(json.dumps(start))
        for offset in range(0, len(pcm), 3200):
            ws.send(pcm[offset : offset + 3200])
            time.sleep(0.1)
        ws.send(json.dumps({"type": "stop"}))
        last = ""
        deadline = time.monotonic() + STREAM_CLOSE_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                last = json.loads(ws.recv(timeout=deadline - time.monotonic()))["type"]
        except ConnectionClosed:
            code = ws.close_code
            return "ok" if (last, code) == ("summary", 1000) else f"closed_{code}"
        except TimeoutError:
            return "no_close"
    return "no_close"


def stream_loop(ws_url: str, pcm: bytes, tally: Tally, until: float, source: str) -> None:
    """Sessions one after another from the loopback address ``source`` (one client each)."""
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            outcome = one_stream(ws_url, pcm, source)
        except ConnectionClosed as e:  # closed while sending: the replica went away
            outcome = f"closed_{e.rcvd.code if e.rcvd else 'abnormal'}"
        except (OSError, TimeoutError) as e:
            outcome = f"connect_{type(e).__name__}"
        tally.add("stream", outcome, time.perf_counter() - started)


def summarise(tally: Tally, rss: dict[str, dict[str, float]], args: argparse.Namespace) -> dict:
    kinds = {}
    for kind, outcomes in tally.outcomes.items():
        latencies = tally.latency_ms[kind]
        kinds[kind] = {
            "total": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
        }
    return {
        "duration_s": args.duration_s,
        "clients_per_kind": args.clients,
        "replica_killed_at_s": round(args.duration_s / 2, 1),
        "requests": kinds,
        "rss_mb": rss,
        "cpu_count": os.cpu_count(),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Soak through the gateway ({result['duration_s']} s, {result['clients_per_kind']} "
        f"clients per kind, a replica SIGKILLed at {result['replica_killed_at_s']} s)",
        "",
        "| kind | total | outcomes | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for kind, row in result["requests"].items():
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(row["outcomes"].items()))
        lines.append(
            f"| {kind} | {row['total']} | {outcomes} | {row['p50_ms']} | {row['p99_ms']} |"
        )
    lines += [
        "",
        "| replica | RSS after warm-up (MB) | RSS at end (MB) | growth |",
        "|---|---|---|---|",
    ]
    for name, rss in result["rss_mb"].items():
        growth = (rss["end"] - rss["warm"]) / rss["warm"] * 100.0
        lines.append(f"| {name} | {rss['warm']:.0f} | {rss['end']:.0f} | {growth:+.1f} % |")
    lines += [
        "",
        "Requests: `cut_<error>` = in flight on the killed replica at the kill, after it had "
        "started answering (nginx cannot resend a response under way; at most one per client "
        "thread). Streams: `ok` = summary then close 1000; `closed_<code>` = closed by the server "
        "or the gateway (the killed replica's streams); `no_close` = no close within 30 s (never "
        "expected). RSS of the replica that was not killed; warm-up = the first fifth of the run.",
        "",
        f"Measured {result['measured']} on {result['cpu_count']} cores.",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, work: Path) -> dict:
    models_dir = export_test_models(work / "models")
    ports = [free_port(), free_port()]
    logs = [work / f"replica{i}.log" for i in range(2)]
    replicas = [start_replica(models_dir, p, log) for p, log in zip(ports, logs, strict=True)]
    render = lambda values: render_template(GATEWAY_TEMPLATE.read_text(), values)  # noqa: E731
    try:
        for port in ports:
            wait_until(
                lambda p=port: httpx.get(f"http://127.0.0.1:{p}/readyz").status_code == 200,
                120,
                "replica",
            )
        (work / "gateway").mkdir()
        with run_gateway(render, work / "gateway", ports) as gateway:
            return soak(args, gateway.url, ports, replicas, models_dir, logs)
    finally:
        for process in replicas:
            stop(process)


def soak(
    args: argparse.Namespace,
    url: str,
    ports: list[int],
    replicas: list[subprocess.Popen[bytes]],
    models_dir: Path,
    logs: list[Path],
) -> dict:
    audio = wav_bytes(synth_speechlike(2.0, 16_000, seed=1), 16_000)
    pcm = (synth_speechlike(5.0, 16_000, seed=2) * 32767).astype("<i2").tobytes()
    tally = Tally()
    started = time.monotonic()
    until = started + args.duration_s
    ws_url = url.replace("http://", "ws://") + "/ws/stream"
    threads = [
        threading.Thread(target=predict_loop, args=(url, audio, tally, until))
        for _ in range(args.clients)
    ]
    threads += [
        threading.Thread(target=stream_loop, args=(ws_url, pcm, tally, until, f"127.0.0.{10 + i}"))
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(args.duration_s / 5)
    rss = {"replica1": {"warm": rss_mb(replicas[1].pid)}}
    time.sleep(max(0.0, started + args.duration_s / 2 - time.monotonic()))
    tally.killed_at = time.monotonic()
    replicas[0].send_signal(signal.SIGKILL)
    replicas[0].wait()
    replicas[0] = start_replica(models_dir, ports[0], logs[0])
    for thread in threads:
        thread.join(timeout=args.duration_s + STREAM_CLOSE_TIMEOUT_S + 30)
    rss["replica1"]["end"] = rss_mb(replicas[1].pid)
    return summarise(tally, rss, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--clients", type=int, default=2, help="threads per kind")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = run(args, Path(folder))
    write(args.out, result, markdown(result))
    with contextlib.suppress(KeyError):
        for kind in ("predict", "models"):
            outcomes = result["requests"][kind]["outcomes"]
            failed = sum(n for o, n in outcomes.items() if o != "ok" and not o.startswith("cut_"))
            cut = sum(n for o, n in outcomes.items() if o.startswith("cut_"))
            if failed or cut > args.clients:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
