"""The README's picture of the page: real models, real test-split clips, headless Chromium.

Joins the given clips (each trimmed of its silence, then 0.6 s of silence after it) into one WAV,
serves ``--models`` on a free port, lets Chromium's fake microphone play the WAV while the page
streams it, uploads the same WAV, and saves a screenshot once ``--predictions`` live
predictions have arrived::

    .venv/bin/python -m tests.browser.screenshot --out docs/img/page.png \\
        ../shared/data/ser-corpus/ravdess/Actor_01/03-01-05-01-01-01-01.opus ...
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import uvicorn

from app.audio import decode_audio
from app.features import FeatureConfig
from app.main import create_app
from app.segment import trim_bounds
from app.settings import Settings
from tests.browser.devtools import chromium_page

RATE = 16_000
GAP_S = 0.6


def joined(clips: list[Path]) -> np.ndarray:
    parts = []
    for clip in clips:
        wave = decode_audio(clip.read_bytes()).samples
        start, end = trim_bounds(wave, FeatureConfig())
        parts += [wave[start:end], np.zeros(int(GAP_S * RATE), np.float32)]
    return np.concatenate(parts)


async def shoot(url: str, wav: Path, out: Path, predictions: int, work: Path) -> None:
    async with chromium_page(wav, work / "profile", work / "chromium.log") as page:
        await page.send("Page.navigate", url=url + "/")
        await page.wait_for("document.querySelectorAll('.bar-row').length > 0")
        document = await page.send("DOM.getDocument")
        node = await page.send(
            "DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file"
        )
        await page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(wav)])
        await page.evaluate("document.getElementById('upload-button').click()")
        await page.wait_for("!document.getElementById('upload-timeline').hidden", 60)
        await page.evaluate("document.getElementById('start-button').click()", user_gesture=True)
        await page.wait_for(
            f"Number(document.getElementById('live-result').dataset.predictions || 0)"
            f" >= {predictions}",
            timeout_s=120,
        )
        await page.screenshot(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("docs/img/page.png"))
    parser.add_argument("--predictions", type=int, default=24)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(Settings(models_dir=args.models))  # the default model, as served
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        wav = work / "clips.wav"
        sf.write(wav, joined(args.clips), RATE, subtype="PCM_16")
        asyncio.run(shoot(f"http://127.0.0.1:{port}", wav, args.out, args.predictions, work))
    server.should_exit = True
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
