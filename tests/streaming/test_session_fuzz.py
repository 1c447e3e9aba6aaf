"""Property-based fuzzing of StreamSession: any bytes, cut anywhere, in any supported format,
either become windows of finite in-range samples with finite features, or raise one of the
documented StreamErrors or AudioErrors (which the route turns into an error message and a
close code from the one table). Nothing else escapes."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.audio import MAX_SAMPLE_MAGNITUDE, AudioError
from app.features import FeatureConfig
from app.streaming import ENCODINGS, StreamError, StreamSession, Window

CONFIG = FeatureConfig()
RATES = (8_000, 16_000, 44_100, 48_000)

int16_samples = st.lists(st.integers(-32768, 32767), min_size=1, max_size=1_000).map(
    lambda values: np.asarray(values, "<i2").tobytes()
)
float32_samples = st.lists(st.floats(width=32), min_size=1, max_size=500).map(
    lambda values: np.asarray(values, "<f4").tobytes()  # NaN, inf, 3e38, subnormals included
)
# A short pattern tiled to a stream length, so that streams long enough for windows are common.
patterns = st.one_of(st.binary(min_size=1, max_size=2_000), int16_samples, float32_samples)


def tiled(pattern: bytes, size: int) -> bytes:
    return (pattern * (size // len(pattern) + 1))[:size]


def run_session(session: StreamSession, payload: bytes, cuts: list[int]) -> list[Window]:
    """Push ``payload`` in pieces of the sizes in ``cuts`` (cycled), then flush."""
    windows: list[Window] = []
    offset, k = 0, 0
    while offset < len(payload):
        size = cuts[k % len(cuts)]
        windows += session.push(payload[offset : offset + size])
        offset, k = offset + size, k + 1
    return windows + session.flush()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.sampled_from(RATES),
    channels=st.integers(1, 3),
    encoding=st.sampled_from(ENCODINGS),
    pattern=patterns,
    seconds=st.sampled_from((0.1, 0.3, 1.0, 1.7, 2.5)),
    extra_bytes=st.sampled_from((0, 0, 0, 1, 3)),  # not 0: the stream ends inside a frame
    cuts=st.lists(st.integers(1, 65_536), min_size=1, max_size=4),
)
def test_any_bytes_give_finite_windows_or_a_stream_error(
    rate: int,
    channels: int,
    encoding: str,
    pattern: bytes,
    seconds: float,
    extra_bytes: int,
    cuts: list[int],
) -> None:
    session = StreamSession(
        CONFIG, hop_s=0.5, window_s=1.0, sample_rate=rate, encoding=encoding, channels=channels
    )
    payload = tiled(pattern, round(seconds * rate) * session.frame_bytes + extra_bytes)
    try:
        windows = run_session(session, payload, cuts)
    except (StreamError, AudioError) as e:
        event(type(e).__name__)
        return
    event("windows" if windows else "no window")
    for window in windows:
        assert np.isfinite(window.samples).all()
        assert np.abs(window.samples).max(initial=0.0) <= MAX_SAMPLE_MAGNITUDE
        assert np.isfinite(window.level_dbfs) or window.level_dbfs == -np.inf
        assert np.isfinite(window.features).all()
