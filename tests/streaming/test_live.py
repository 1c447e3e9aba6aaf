"""LiveStream: a session's windows classified by a served model, smoothed and summed up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.live import LiveStream
from app.registry import ServedModel, load_model
from app.settings import Settings
from app.streaming import StreamSession
from tests.conftest import synth_speechlike

RATE = 16_000


@pytest.fixture(scope="module")
def served(models_dir: Path) -> Iterator[ServedModel]:
    model = load_model(models_dir / "ce.onnx", Settings(models_dir=models_dir))
    yield model
    model.close()


def _live(model: ServedModel) -> LiveStream:
    config = model.feature_config
    session = StreamSession(
        config, 0.5, config.window_samples / config.sample_rate, RATE, "pcm_f32le", 1
    )
    return LiveStream(session, model)


def test_speech_windows_get_the_models_probabilities_and_silence_gets_none(
    served: ServedModel,
) -> None:
    live = _live(served)
    window_s = served.feature_config.window_s
    speech = synth_speechlike(window_s + 1.0, RATE).astype(np.float32)
    results = live.push(speech.tobytes())
    assert [r.span.index for r in results] == [0, 1, 2]
    windows = _live(served).session.push(speech.tobytes())  # the same cut, with its features
    expected = served.predict(np.stack([w.features for w in windows]))
    for result, row in zip(results, expected, strict=True):
        assert result.span.speech
        np.testing.assert_allclose(result.probabilities, row, rtol=0, atol=1e-6)
    assert results[0].smoothed == pytest.approx(results[0].probabilities)

    silent = live.push(np.zeros(RATE * 4, np.float32).tobytes())
    quiet = [r for r in silent if not r.span.speech]  # windows past the speech's tail
    assert quiet and all(r.probabilities is None for r in quiet)
    last_speech = [r for r in silent if r.span.speech][-1] if len(quiet) < len(silent) else None
    shown = results[-1].smoothed if last_speech is None else last_speech.smoothed
    for r in quiet:  # the smoothed display holds the last speech
        np.testing.assert_array_equal(r.smoothed, shown)

    everything = results + silent + live.finish()
    speech_rows = [r.probabilities for r in everything if r.probabilities is not None]
    totals = live.totals
    assert totals.duration_s == pytest.approx(window_s + 5.0)
    assert totals.windows == len(everything)
    assert totals.speech_windows == len(speech_rows)
    np.testing.assert_allclose(totals.probabilities, np.mean(speech_rows, axis=0), atol=1e-9)


def test_a_session_with_no_speech_sums_up_to_nothing(served: ServedModel) -> None:
    live = _live(served)
    results = live.push(np.zeros(RATE * 5, np.float32).tobytes()) + live.finish()
    assert results and all(r.probabilities is None and r.smoothed is None for r in results)
    totals = live.totals
    assert (totals.speech_windows, totals.probabilities) == (0, None)
    assert totals.windows == len(results)
