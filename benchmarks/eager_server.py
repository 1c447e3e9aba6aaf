"""The baseline the service is compared with: what a typical SER repository ships.

A FastAPI app whose ``POST /predict`` takes the same multipart upload as the service and does
what such repositories do per request: ``librosa.load`` the file at 16 kHz,
``librosa.effects.trim``, cut or pad to 3.5 s, ``librosa.feature.melspectrogram`` + log, and the
same CNN-Transformer in PyTorch eager mode (``torch.no_grad``), then a softmax as JSON. Same
architecture and input size as the released models; the weights come from a training checkpoint
when one is given, else a fresh initialisation (the timing does not depend on the weights).

Needs the training extra (torch, librosa). Run by :mod:`benchmarks.bench_service`::

    python -m benchmarks.eager_server --port 8200 [--checkpoint runs/random/ser-ce/best.pt]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import librosa
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile

from app.features import FeatureConfig
from app.labels import LABELS
from training.model import ModelConfig, build_model

CONFIG = FeatureConfig()


def create_app(checkpoint: Path | None) -> FastAPI:
    model = build_model(ModelConfig()).eval()
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    app = FastAPI()

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 (FastAPI's idiom)
        wave, _ = librosa.load(io.BytesIO(await file.read()), sr=CONFIG.sample_rate)
        wave, _ = librosa.effects.trim(wave, top_db=CONFIG.trim_top_db)
        # librosa frames n_fft samples (the service frames win_length): a little more audio
        # gives the model's 348 frames.
        wave = librosa.util.fix_length(
            wave, size=CONFIG.window_samples + CONFIG.n_fft - CONFIG.win_length
        )
        mel = librosa.feature.melspectrogram(
            y=wave,
            sr=CONFIG.sample_rate,
            n_fft=CONFIG.n_fft,
            win_length=CONFIG.win_length,
            hop_length=CONFIG.hop_length,
            n_mels=CONFIG.n_mels,
            center=False,
        )
        features = torch.from_numpy(np.log(np.maximum(mel, CONFIG.log_floor))[None])
        with torch.no_grad():
            probabilities = torch.softmax(model(features.float()), dim=-1)[0]
        return dict(zip(LABELS, probabilities.tolist(), strict=True))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(create_app(args.checkpoint), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
