"""Measure the service the way a client sees it, beside the engine's ceiling and a PyTorch baseline.

One run, one machine, side by side:

1. ``/predict`` over HTTP against a real ``python -m app`` process started here: sequential
   latency (p50/p95/p99) and throughput at a few concurrency levels;
2. ``/ws/stream``: concurrent sessions pushing audio as fast as they can; the server's own
   ``latency_ms`` per window and the audio processed per wall-clock second;
3. the engine alone: ONNX Runtime ``session.run`` on ready-made features at batch 1 and 16 (the
   ceiling the service adds its work to), and PyTorch eager on the same architecture and batch,
   when torch is installed (the training extra).

Usage::

    python -m benchmarks.bench_service [--models-dir models] [--model ce] [--requests 200]

Results go to ``benchmarks/results/latest.json`` and ``latest.md`` (and the terminal).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import websockets

from app.contract import INPUT_NAME, ModelMetadata
from app.engine import open_session
from benchmarks.record import RESULTS, header, write

ROOT = Path(__file__).resolve().parent.parent


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p95_ms": round(float(np.percentile(values, 95)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "mean_ms": round(float(values.mean()), 2),
        "n": len(samples_ms),
    }


def test_clip(duration_s: float, sample_rate: int = 16_000) -> np.ndarray:
    """A speech-like signal (harmonic glide with an envelope); content does not change timing."""
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(150 + 40 * np.sin(2 * np.pi * 0.7 * t)) / sample_rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2) * tone).astype(np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(models_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SER_MODELS_DIR": str(models_dir), "SER_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not become ready within 60 s")


async def http_predict(url: str, body: bytes, model: str, requests: int, concurrency: int) -> dict:
    latencies: list[float] = []
    queue = list(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            start = time.perf_counter()
            response = await client.post(
                f"{url}/predict", params={"model": model}, files={"file": ("clip.wav", body)}
            )
            response.raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)

    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(f"{url}/predict", files={"file": ("clip.wav", body)})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall_s = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        **percentiles(latencies),
        "requests_per_s": round(requests / wall_s, 2),
    }


async def stream_session(url: str, audio: np.ndarray, model: str, chunk_samples: int) -> list:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    latencies: list[float] = []
    async with websockets.connect(f"{url}/ws/stream", max_size=2**22) as ws:
        start = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
        await ws.send(json.dumps({**start, "model": model}))
        json.loads(await ws.recv())
        for i in range(0, len(pcm), chunk_samples * 2):
            await ws.send(pcm[i : i + chunk_samples * 2])
        await ws.send(json.dumps({"type": "stop"}))
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "prediction" and event.get("latency_ms") is not None:
                latencies.append(float(event["latency_ms"]))
    return latencies


async def streaming(url: str, model: str, sessions: int, audio_s: float) -> dict:
    ws_url = url.replace("http://", "ws://")
    audio = test_clip(audio_s)
    start = time.perf_counter()
    results = await asyncio.gather(
        *(stream_session(ws_url, audio, model, 1_600) for _ in range(sessions))
    )
    wall_s = time.perf_counter() - start
    latencies = [value for session in results for value in session]
    return {
        "sessions": sessions,
        "audio_s_per_session": audio_s,
        **percentiles(latencies),
        "audio_x_realtime": round(sessions * audio_s / wall_s, 1),
    }


def time_call(fn: Any, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # first calls pick kernels and allocate: not what is measured
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def find_model(models_dir: Path, loss: str) -> Path:
    """The ONNX file whose metadata names ``loss`` (the server keys models the same way)."""
    for path in sorted(models_dir.glob("*.onnx")):
        session, _ = open_session(path, ("cpu",), intra_op_threads=1, inter_op_threads=1)
        props = session.get_modelmeta().custom_metadata_map
        if ModelMetadata.from_onnx_props(props).loss == loss:
            return path
    raise FileNotFoundError(f"no model trained with loss {loss!r} in {models_dir}")


def engine_ceiling(model_path: Path, threads: int) -> list[dict]:
    """ONNX Runtime vs PyTorch eager on the same architecture, same features, same threads."""
    session, _ = open_session(model_path, ("cpu",), intra_op_threads=threads, inter_op_threads=1)
    meta = ModelMetadata.from_onnx_props(session.get_modelmeta().custom_metadata_map)
    frames = meta.feature_config.window_frames
    rows = []
    try:
        import torch

        from training.model import ModelConfig, build_model

        torch.set_num_threads(threads)
        eager = build_model(ModelConfig(architecture=meta.architecture)).eval()
    except ImportError:
        eager = None
    for batch in (1, 16):
        features = np.random.default_rng(0).standard_normal((batch, 128, frames), np.float32)
        repeats = 30 if batch == 1 else 5
        ort_s = time_call(lambda f=features: session.run(None, {INPUT_NAME: f}), repeats)
        row: dict[str, Any] = {"batch": batch, "onnxruntime_clips_per_s": round(batch / ort_s, 1)}
        if eager is not None:
            tensor = torch.from_numpy(features)
            with torch.inference_mode():
                eager_s = time_call(lambda t=tensor: eager(t), repeats)
            row["pytorch_eager_clips_per_s"] = round(batch / eager_s, 1)
            row["onnxruntime_speedup"] = round(eager_s / ort_s, 2)
        rows.append(row)
    return rows


def markdown(results: dict) -> str:
    lines = [
        f"# Benchmark ({results['when']}, {results['machine']}, model `{results['model']}`)",
        "",
        f"Command: `{results['command']}`",
        "",
        "## POST /predict (3.5 s WAV clip, 16 kHz)",
        "| concurrency | p50 ms | p95 ms | p99 ms | requests/s |",
        "|---|---|---|---|---|",
    ]
    for r in results["predict"]:
        lines.append(
            f"| {r['concurrency']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['requests_per_s']} |"
        )
    lines += [
        "",
        "## /ws/stream (sessions pushing audio as fast as they can; server `latency_ms`)",
        "| sessions | p50 ms | p95 ms | p99 ms | audio x real time |",
        "|---|---|---|---|---|",
    ]
    for r in results["stream"]:
        lines.append(
            f"| {r['sessions']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['audio_x_realtime']} |"
        )
    lines += [
        "",
        f"## Engine ceiling ({results['threads']} threads, features ready-made)",
        "| batch | ONNX Runtime clips/s | PyTorch eager clips/s | ORT / eager |",
        "|---|---|---|---|",
    ]
    for r in results["engine"]:
        lines.append(
            f"| {r['batch']} | {r['onnxruntime_clips_per_s']} "
            f"| {r.get('pytorch_eager_clips_per_s', 'n/a')} "
            f"| {r.get('onnxruntime_speedup', 'n/a')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="ce")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--stream-audio-s", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=RESULTS / "latest")
    args = parser.parse_args()

    buf = io.BytesIO()
    sf.write(buf, test_clip(3.5), 16_000, subtype="PCM_16", format="WAV")
    port = free_port()
    server = start_server(args.models_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        predict = [
            asyncio.run(http_predict(url, buf.getvalue(), args.model, args.requests, c))
            for c in args.concurrency
        ]
        stream = [
            asyncio.run(streaming(url, args.model, n, args.stream_audio_s)) for n in args.sessions
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
    model_path = find_model(args.models_dir, args.model)
    results = {
        **header("bench_service"),
        "model": args.model,
        "threads": args.threads,
        "predict": predict,
        "stream": stream,
        "engine": engine_ceiling(model_path, args.threads),
    }
    write(args.out, results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
