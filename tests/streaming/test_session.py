"""StreamSession: windows cut from a live stream equal the same spans cut from the whole file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soxr

from app.audio import NonFiniteAudioError
from app.features import FeatureConfig, log_mel
from app.live import PredictionTrack
from app.streaming import (
    MIN_FINAL_S,
    PartialFrameError,
    StreamConfigError,
    StreamSession,
    StreamTooLongError,
    UnsupportedEncodingError,
    Window,
)
from app.windows import SlidingFeatures, fixed_window
from tests.conftest import synth_speechlike, synthetic_feature_config

CONFIG = FeatureConfig()
RATE = CONFIG.sample_rate
WINDOW_S = CONFIG.window_s
HOP_S = 0.5


def pcm16(wave: np.ndarray) -> bytes:
    """float [-1, 1) -> little-endian int16 bytes; shape (n,) or (n, channels)."""
    return np.clip(np.round(wave * 32768.0), -32768, 32767).astype("<i2").tobytes()


def quantised(wave: np.ndarray) -> np.ndarray:
    """What a PCM16 round trip leaves of ``wave``, as float32."""
    return np.frombuffer(pcm16(wave), dtype="<i2").astype(np.float32) / 32768.0


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    """Split ``data`` into pieces of the given sizes, cycling through them."""
    out, i, k = [], 0, 0
    while i < len(data):
        out.append(data[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


def stream(session: StreamSession, data: bytes, sizes: list[int]) -> list[Window]:
    windows = []
    for piece in chunks(data, sizes):
        windows += session.push(piece)
    return windows + session.flush()


def new_session(sample_rate: int = RATE, **kwargs: object) -> StreamSession:
    args: dict = {
        "hop_s": HOP_S,
        "window_s": WINDOW_S,
        "sample_rate": sample_rate,
        "encoding": "pcm_s16le",
        "channels": 1,
    }
    args.update(kwargs)
    return StreamSession(CONFIG, **args)


@pytest.fixture(scope="module")
def clip_16k() -> np.ndarray:
    return quantised(synth_speechlike(8.0, RATE, seed=1))


@pytest.mark.parametrize("normalised", [False, True])
def test_16k_windows_equal_file_spans_sample_for_sample(
    clip_16k: np.ndarray, normalised: bool
) -> None:
    config = synthetic_feature_config() if normalised else CONFIG
    session = StreamSession(config, HOP_S, WINDOW_S, RATE, "pcm_s16le", 1)
    windows = stream(session, pcm16(clip_16k), [1001, 3, 7777, 1])
    window, hop = CONFIG.window_samples, round(HOP_S * RATE)
    n_full = (clip_16k.shape[0] - window) // hop + 1
    assert len(windows) == n_full  # 8 s ends exactly on a hop: nothing left for a final window
    for k, w in enumerate(windows):
        span = clip_16k[k * hop : k * hop + window]
        np.testing.assert_array_equal(w.samples, span)
        assert w.start_s == pytest.approx(k * HOP_S) and w.end_s == pytest.approx(k * HOP_S + 3.5)
        np.testing.assert_allclose(w.features, log_mel(span, config), rtol=0, atol=1e-5)


def test_48k_windows_match_whole_file_resampling_and_ignore_chunking() -> None:
    clip_48k = quantised(synth_speechlike(8.0, 48_000, seed=2))
    whole = soxr.resample(clip_48k, 48_000, RATE, quality="HQ").astype(np.float32)
    data = pcm16(clip_48k)
    a = stream(new_session(48_000), data, [4097, 1, 333, 10_001])
    b = stream(new_session(48_000), data, [96_000])
    assert len(a) == len(b) == 10
    hop = round(HOP_S * RATE)
    for k, (wa, wb) in enumerate(zip(a, b, strict=True)):
        np.testing.assert_array_equal(wa.samples, wb.samples)  # chunking independence: exact
        span = whole[k * hop : k * hop + CONFIG.window_samples]
        np.testing.assert_allclose(wa.samples, span, rtol=0, atol=1e-5)


def test_44k1_chunking_independence_across_a_fractional_ratio() -> None:
    clip = quantised(synth_speechlike(5.0, 44_100, seed=3))
    data = pcm16(clip)
    a = stream(new_session(44_100), data, [101, 2, 8191])
    b = stream(new_session(44_100), data, [len(data)])
    assert [w.start_s for w in a] == [w.start_s for w in b]
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa.samples, wb.samples)


def test_odd_byte_counts_keep_the_split_sample(clip_16k: np.ndarray) -> None:
    data = pcm16(clip_16k[: 4 * RATE])
    session = new_session()
    assert session.push(data[:3]) == [] and session.pending_bytes == 1
    byte_by_odd_byte = stream(session, data[3:], [1, 5, 3])
    whole = stream(new_session(), data, [len(data)])
    assert len(byte_by_odd_byte) == len(whole) == 2
    for wa, wb in zip(byte_by_odd_byte, whole, strict=True):
        np.testing.assert_array_equal(wa.samples, wb.samples)


def test_a_stream_ending_inside_a_sample_is_rejected_at_flush(clip_16k: np.ndarray) -> None:
    session = new_session(channels=2)
    session.push(pcm16(np.stack([clip_16k[:RATE], clip_16k[:RATE]], axis=1)) + b"\x01\x02\x03")
    assert session.pending_bytes == 3
    with pytest.raises(PartialFrameError, match="4 bytes"):
        session.flush()


def test_float32_and_int16_encodings_give_the_same_windows(clip_16k: np.ndarray) -> None:
    as_int = stream(new_session(), pcm16(clip_16k), [999])
    as_float = stream(
        new_session(encoding="pcm_f32le"), clip_16k.astype("<f4").tobytes(), [1234, 3]
    )
    assert len(as_int) == len(as_float)
    for wa, wb in zip(as_int, as_float, strict=True):
        np.testing.assert_array_equal(wa.samples, wb.samples)


def test_stereo_is_averaged_to_mono(clip_16k: np.ndarray) -> None:
    left, right = clip_16k, 0.5 * clip_16k
    interleaved = np.stack([left, right], axis=1).astype("<f4").tobytes()
    stereo = stream(new_session(encoding="pcm_f32le", channels=2), interleaved, [4097, 5])
    mono = stream(
        new_session(encoding="pcm_f32le"), (0.75 * clip_16k).astype("<f4").tobytes(), [8000]
    )
    assert len(stereo) == len(mono) > 0
    for ws, wm in zip(stereo, mono, strict=True):
        np.testing.assert_allclose(ws.samples, wm.samples, rtol=0, atol=1e-7)


@pytest.mark.parametrize("hop_s", [0.25, 0.5, 1.0])
def test_windows_start_every_hop(hop_s: float, clip_16k: np.ndarray) -> None:
    session = new_session(hop_s=hop_s)
    windows = [w for piece in chunks(pcm16(clip_16k), [16_000]) for w in session.push(piece)]
    starts = [w.start_s for w in windows]
    assert len(windows) == int((8.0 - WINDOW_S) / hop_s) + 1
    np.testing.assert_allclose(np.diff(starts), hop_s)
    assert [w.index for w in windows] == list(range(len(windows)))
    assert windows[0].start_s == 0.0 and windows[0].end_s == pytest.approx(WINDOW_S)


def test_windows_arrive_as_soon_as_a_window_is_complete(clip_16k: np.ndarray) -> None:
    session = new_session()
    data = pcm16(clip_16k)
    window_bytes = 2 * CONFIG.window_samples
    assert session.push(data[: window_bytes - 2]) == []
    first = session.push(data[window_bytes - 2 : window_bytes])
    assert [w.end_s for w in first] == [pytest.approx(WINDOW_S)]
    assert session.push(data[window_bytes : window_bytes + 2 * 7999]) == []
    assert [w.start_s for w in session.push(data[window_bytes + 2 * 7999 :][:2])] == [0.5]


def test_at_48k_a_window_waits_only_for_the_resampler_look_ahead() -> None:
    session = new_session(48_000)
    data = pcm16(synth_speechlike(4.0, 48_000))
    step = 2 * 480  # 10 ms chunks
    for i in range(0, len(data), step):
        if session.push(data[i : i + step]):
            received_s = (i + step) / 2 / 48_000
            break
    assert WINDOW_S <= received_s <= WINDOW_S + 0.04  # measured: 30 ms at 48 kHz (soxr HQ)


def test_an_integral_float_sample_rate_is_accepted() -> None:
    assert new_session(48_000.0).sample_rate == 48_000


def test_flush_adds_a_final_window_ending_at_the_last_sample(clip_16k: np.ndarray) -> None:
    n = int(5.3 * RATE)
    windows = stream(new_session(), pcm16(clip_16k[:n]), [5000])
    assert [w.start_s for w in windows[:-1]] == [0.0, 0.5, 1.0, 1.5]
    final = windows[-1]
    assert final.end_s == pytest.approx(5.3) and final.start_s == pytest.approx(5.3 - WINDOW_S)
    assert final.padded_samples == 0
    np.testing.assert_array_equal(final.samples, clip_16k[n - CONFIG.window_samples : n])


def test_flush_skips_a_final_window_when_too_little_audio_is_unseen(clip_16k: np.ndarray) -> None:
    n = int((5.0 + MIN_FINAL_S / 2) * RATE)
    windows = stream(new_session(), pcm16(clip_16k[:n]), [5000])
    assert windows[-1].end_s == pytest.approx(5.0)


def test_flush_pads_a_stream_shorter_than_one_window(clip_16k: np.ndarray) -> None:
    (only,) = stream(new_session(48_000), pcm16(synth_speechlike(2.0, 48_000)), [4800])
    assert only.start_s == 0.0 and only.end_s == pytest.approx(2.0)
    assert only.padded_samples == CONFIG.window_samples - 2 * RATE
    assert only.samples.shape == (CONFIG.window_samples,)
    assert not only.samples[2 * RATE :].any()
    assert stream(new_session(), pcm16(clip_16k[: RATE // 10]), [100]) == []


def test_silence_noise_and_hum_are_not_speech_at_any_level(clip_16k: np.ndarray) -> None:
    """The trained detector, not an energy gate: a fan at -20 dBFS is as silent as silence."""
    rng = np.random.default_rng(0)
    t = np.arange(4 * RATE) / RATE
    hum = np.sin(2 * np.pi * 100 * t) + 0.3 * np.sin(2 * np.pi * 200 * t)
    for name, audio in {
        "silence": np.zeros(4 * RATE),
        "noise at -60 dBFS": 10 ** (-60 / 20) * rng.standard_normal(4 * RATE),
        "noise at -20 dBFS": 10 ** (-20 / 20) * rng.standard_normal(4 * RATE),
        "100 Hz hum at -28 dBFS": 10 ** (-28 / 20) * hum / np.sqrt(np.mean(hum**2)),
    }.items():
        windows = stream(new_session(encoding="pcm_f32le"), audio.astype("<f4").tobytes(), [8000])
        assert windows and not any(w.speech for w in windows), name
        assert max(w.active_fraction for w in windows) < 0.05, name
    speech = stream(new_session(), pcm16(clip_16k), [8000])
    assert all(w.speech for w in speech)
    assert -40 < speech[0].level_dbfs < -5 and speech[0].active_fraction > 0.8


def test_a_quiet_voice_is_speech(clip_16k: np.ndarray) -> None:
    for gain_db in (-20, -30):  # the clip at about -47 and -57 dBFS
        quiet = clip_16k * 10 ** (gain_db / 20)
        windows = stream(new_session(encoding="pcm_f32le"), quiet.astype("<f4").tobytes(), [8000])
        assert windows and all(w.speech for w in windows), gain_db


def test_speech_after_silence_turns_the_gate_on() -> None:
    audio = np.concatenate([np.zeros(4 * RATE), synth_speechlike(4.0, RATE)])
    windows = stream(new_session(), pcm16(audio), [3200])
    flags = [w.speech for w in windows]
    assert flags[0] is False and flags[-1] is True
    assert flags == sorted(flags)  # off, then on: once speech enters the window it stays


def test_reset_starts_over(clip_16k: np.ndarray) -> None:
    session = new_session(48_000)
    data = pcm16(synth_speechlike(4.0, 48_000))
    first = stream(session, data, [777])
    session.reset()
    again = stream(session, data, [777])
    assert session.windows == len(again) == len(first)
    for wa, wb in zip(first, again, strict=True):
        np.testing.assert_array_equal(wa.samples, wb.samples)


def test_push_after_flush_is_refused() -> None:
    session = new_session()
    session.flush()
    with pytest.raises(ValueError, match="reset"):
        session.push(b"\x00\x00")


def test_duration_counts_whole_frames_at_the_client_rate() -> None:
    session = new_session(48_000, channels=2)
    session.push(b"\x00" * (4 * 48_000 + 3))
    assert session.duration_s == 1.0 and session.pending_bytes == 3


def test_non_finite_float_samples_are_rejected() -> None:
    session = new_session(encoding="pcm_f32le")
    with pytest.raises(NonFiniteAudioError, match="NaN"):
        session.push(np.array([0.0, np.nan], dtype="<f4").tobytes())


def test_a_session_longer_than_its_limit_is_stopped() -> None:
    session = new_session(max_duration_s=1.0)
    session.push(b"\x00" * 2 * RATE)
    with pytest.raises(StreamTooLongError, match="1 s limit"):
        session.push(b"\x00\x00")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"encoding": "mp3"}, UnsupportedEncodingError, "pcm_s16le"),
        ({"sample_rate": 4000}, StreamConfigError, "8000-192000"),
        ({"sample_rate": 16000.5}, StreamConfigError, "integer"),
        ({"channels": 0}, StreamConfigError, "channels"),
        ({"channels": "2"}, StreamConfigError, "channels"),
        ({"hop_s": 0.01}, StreamConfigError, "hop_s"),
        ({"hop_s": math.nan}, StreamConfigError, "hop_s"),
        ({"window_s": 10.0}, StreamConfigError, "window_s"),
        ({"window_s": 2.0, "hop_s": 3.0}, StreamConfigError, "hop_s"),
    ],
)
def test_bad_formats_say_what_to_fix(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        new_session(**kwargs)


def test_a_shorter_window_is_padded_to_the_model_window_for_features(
    clip_16k: np.ndarray,
) -> None:
    windows = stream(new_session(window_s=2.0), pcm16(clip_16k), [16_000])
    assert windows[0].samples.shape == (2 * RATE,)
    features = np.stack([w.features for w in windows[:2]])
    assert features.shape == (2, CONFIG.n_mels, CONFIG.window_frames)
    padded = np.zeros(CONFIG.window_samples, np.float32)
    padded[: 2 * RATE] = clip_16k[: 2 * RATE]
    np.testing.assert_allclose(features[0], log_mel(padded, CONFIG), atol=1e-5)


@pytest.mark.parametrize(
    ("seed", "rate", "encoding", "hop_s"),
    [
        (1, 16_000, "pcm_s16le", 0.5),
        (2, 48_000, "pcm_s16le", 0.5),
        (3, 44_100, "pcm_f32le", 0.25),
        (4, 22_050, "pcm_f32le", 0.33),  # 5280 samples: 33 frames, still on the grid
        (5, 16_000, "pcm_s16le", 0.255),  # 4080 samples: off the grid, every window whole
        (6, 8_000, "pcm_f32le", 3.5),  # hop = window: no frame shared, each starts afresh
    ],
)
def test_incremental_features_equal_the_whole_window_features(
    seed: int, rate: int, encoding: str, hop_s: float
) -> None:
    # Each window's features, computed from the frames it shares with the previous windows,
    # equal log_mel of that window's own samples, for random chunkings, rates and encodings.
    rng = np.random.default_rng(seed)
    config = synthetic_feature_config()
    wave = synth_speechlike(9.3, rate, seed=seed) * 0.5
    data = pcm16(wave) if encoding == "pcm_s16le" else wave.astype("<f4").tobytes()
    session = StreamSession(config, hop_s, WINDOW_S, rate, encoding, 1)
    sizes = [int(n) for n in rng.integers(1, 20_000, size=7)]
    windows = stream(session, data, sizes) + session.flush()
    assert len(windows) >= 3 and windows[-1].end_s > 9.3 - MIN_FINAL_S
    for w in windows:
        expected = log_mel(fixed_window(w.samples, config), config)
        np.testing.assert_allclose(w.features, expected, rtol=0, atol=2e-5)


def test_sliding_features_compute_only_the_new_frames(clip_16k: np.ndarray) -> None:
    sliding = SlidingFeatures(CONFIG)
    hop = round(HOP_S * RATE)
    sliding.window(clip_16k, 0, 0)
    assert sliding.cached_frames == CONFIG.window_frames
    computed = []
    for k in range(1, 5):  # each later window adds hop / hop_length = 50 frames to the cache
        before_first, before = sliding._first, sliding.cached_frames
        sliding.window(clip_16k, 0, k * hop)
        computed.append(sliding.cached_frames - (before - (sliding._first - before_first)))
    assert computed == [hop // CONFIG.hop_length] * 4
    with pytest.raises(ValueError, match="frame grid"):
        sliding.window(clip_16k, 0, 7)


def test_prediction_track_smooths_speech_and_ignores_silence() -> None:
    track = PredictionTrack(hop_s=0.5, smoothing_s=1.5)
    a, b = np.eye(8)[0], np.eye(8)[1]
    assert track.add(None) is None
    np.testing.assert_allclose(track.add(a), a)
    smoothed = track.add(b)
    alpha = 1 - math.exp(-0.5 / 1.5)
    np.testing.assert_allclose(smoothed, (1 - alpha) * a + alpha * b)
    np.testing.assert_allclose(track.add(None), smoothed)
    assert (track.windows, track.speech_windows) == (4, 2)
    np.testing.assert_allclose(track.mean, (a + b) / 2)
    track.reset()
    assert track.mean is None and track.smoothed is None
