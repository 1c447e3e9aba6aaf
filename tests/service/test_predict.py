"""POST /predict and /v1/predict: formats, windows, probabilities, model choice."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.affect import affect_of
from app.contract import INPUT_NAME, OUTPUT_NAME, ModelMetadata, probabilities
from app.features import log_mel
from app.labels import LABELS
from app.segment import trim_bounds
from app.windows import training_segment, window_starts
from tests.conftest import av_bytes, synth_speechlike, wav_bytes
from tests.service.conftest import rewrite_metadata

RATE = 16_000


def encode(wave: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def post_file(client: TestClient, data: bytes, path: str = "/predict", **params: str):
    return client.post(path, params=params, files={"file": ("clip", data, "audio/wav")})


def offline_probabilities(models_dir: Path, key: str, wave: np.ndarray) -> np.ndarray:
    """What offline evaluation computes for a clip: training segment -> ONNX -> probabilities."""
    session = ort.InferenceSession(str(models_dir / f"{key}.onnx"))
    meta = stored_metadata(models_dir, key)
    segment, _ = training_segment(wave, meta.feature_config)
    features = log_mel(segment[None], meta.feature_config)
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: features})
    return meta.probabilities(logits)[0]


def check_body(body: dict) -> None:
    assert list(body["probabilities"]) == list(LABELS)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    for result in [body, *body["segments"]]:
        probs = result["probabilities"]
        assert result["label"] == max(probs, key=probs.get)
        # Rounded to 6 decimals in one place; the confidence is exactly the label's value.
        assert result["confidence"] == probs[result["label"]]
        assert all(v == round(v, 6) for v in probs.values())
        # Arousal and valence are those of the probabilities, rounded to 4 decimals.
        expected = affect_of(np.array([probs[label] for label in LABELS]))
        assert (result["arousal"], result["valence"]) == pytest.approx(expected, abs=2e-4)
    for segment in body["segments"]:
        assert sum(segment["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(body["timing_ms"]) == {"decode", "vad", "features", "inference", "total"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] > 0


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [
        ("WAV", "PCM_U8"),
        ("WAV", "PCM_16"),
        ("WAV", "PCM_24"),
        ("WAV", "PCM_32"),
        ("WAV", "FLOAT"),
        ("FLAC", "PCM_16"),
        ("OGG", "VORBIS"),
    ],
)
def test_formats_decode_and_classify(client: TestClient, fmt: str, subtype: str) -> None:
    wave = synth_speechlike(2.0, RATE)
    response = post_file(client, encode(wave, RATE, fmt, subtype))
    assert response.status_code == 200, response.text
    body = response.json()
    check_body(body)
    assert body["audio"]["format"] == fmt
    assert body["duration_s"] == pytest.approx(2.0, abs=0.01)
    assert body["padded"] is True and len(body["segments"]) == 1


def test_raw_body_equals_multipart(client: TestClient) -> None:
    data = wav_bytes(synth_speechlike(3.0, RATE), RATE)
    multipart = post_file(client, data).json()
    for content_type in ("audio/wav", "audio/x-wav", "application/octet-stream"):
        raw = client.post("/v1/predict", content=data, headers={"content-type": content_type})
        assert raw.status_code == 200, raw.text
        assert raw.json()["probabilities"] == pytest.approx(multipart["probabilities"], abs=1e-6)


def test_raw_flac_and_ogg_content_types(client: TestClient) -> None:
    wave = synth_speechlike(1.5, RATE)
    flac = client.post(
        "/predict", content=encode(wave, RATE, "FLAC"), headers={"content-type": "audio/flac"}
    )
    ogg = client.post(
        "/predict",
        content=encode(wave, RATE, "OGG", "VORBIS"),
        headers={"content-type": "audio/ogg"},
    )
    assert flac.status_code == ogg.status_code == 200
    assert flac.json()["audio"]["format"] == "FLAC" and ogg.json()["audio"]["format"] == "OGG"


def test_stereo_48k_is_downmixed_and_resampled(client: TestClient) -> None:
    mono = synth_speechlike(2.5, 48_000)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    body = post_file(client, encode(stereo, 48_000)).json()
    check_body(body)
    assert body["audio"] == {"format": "WAV", "sample_rate": 48_000, "channels": 2}
    assert body["duration_s"] == pytest.approx(2.5, abs=0.01)


def test_first_window_is_the_offline_evaluation(client: TestClient, models_dir: Path) -> None:
    pad = np.zeros(RATE // 4, dtype=np.float32)
    wave = np.concatenate([pad, synth_speechlike(2.0, RATE, seed=3), pad])
    for key in ("ce", "bce"):
        body = post_file(client, encode(wave, RATE, subtype="FLOAT"), model=key).json()
        expected = offline_probabilities(models_dir, key, wave)
        got = np.array([body["segments"][0]["probabilities"][label] for label in LABELS])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(list(body["probabilities"].values()), expected, atol=1e-5)
        assert body["model"]["loss"] == key and body["padded"] is True


def test_long_clip_gets_sliding_windows_with_times(client: TestClient, models_dir: Path) -> None:
    silence = np.zeros(RATE // 2, dtype=np.float32)
    wave = np.concatenate([silence, synth_speechlike(9.0, RATE, seed=1), silence])
    body = post_file(client, encode(wave, RATE, subtype="FLOAT"), model="ce").json()
    check_body(body)
    start, end = trim_bounds(wave, stored_metadata(models_dir, "ce").feature_config)
    offsets = window_starts(end - start, 56_000, 28_000)
    assert len(offsets) == len(body["segments"]) == 5  # 0, 1.75, 3.5, 5.25 and one ending at end
    for offset, segment in zip(offsets, body["segments"], strict=True):
        assert segment["start_s"] == pytest.approx((start + offset) / RATE, abs=1e-3)
        assert segment["end_s"] - segment["start_s"] == pytest.approx(3.5, abs=1e-3)
    assert body["segments"][-1]["end_s"] == pytest.approx(end / RATE, abs=1e-3)
    assert body["segments"][0]["start_s"] == pytest.approx(
        0.5, abs=0.1
    )  # trim resolution: 32 ms hops
    mean = np.mean([list(s["probabilities"].values()) for s in body["segments"]], axis=0)
    np.testing.assert_allclose(list(body["probabilities"].values()), mean, atol=1e-5)
    assert body["padded"] is False and body["duration_s"] == pytest.approx(10.0)
    first = offline_probabilities(models_dir, "ce", wave)
    got = [body["segments"][0]["probabilities"][label] for label in LABELS]
    np.testing.assert_allclose(got, first, atol=1e-5)


def test_noise_is_no_speech(client: TestClient) -> None:
    """A fan, mains hum or a chord is sound, and no voice: a clear 422, never a label."""
    rng = np.random.default_rng(3)
    t = np.arange(6 * RATE) / RATE
    cases = {
        "white noise at -30 dBFS": 10 ** (-30 / 20) * rng.standard_normal(t.size),
        "100 Hz hum": 0.05 * np.sin(2 * np.pi * 100 * t),
        "a C major chord": 0.05 * sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)),
    }
    for name, wave in cases.items():
        response = post_file(client, encode(wave.astype(np.float32), RATE, subtype="FLOAT"))
        assert response.status_code == 422, name
        error = response.json()["error"]
        assert error["code"] == "no_speech", name
        assert "speech detector heard 0.00 s" in error["message"], name


def test_windows_without_speech_carry_no_label_and_stay_out_of_the_mean(
    client: TestClient,
) -> None:
    """Speech, 7 s of steady noise, speech: the windows inside the noise are reported without
    a label, and the clip's probabilities are the mean of the speech windows only."""
    rng = np.random.default_rng(4)
    noise = (0.03 * rng.standard_normal(7 * RATE)).astype(np.float32)
    wave = np.concatenate(
        [synth_speechlike(3.5, RATE, seed=1), noise, synth_speechlike(3.5, RATE, seed=2)]
    )
    body = post_file(client, encode(wave, RATE, subtype="FLOAT"), model="ce").json()
    segments = body["segments"]
    heard = [s for s in segments if s["speech"]]
    silent = [s for s in segments if not s["speech"]]
    assert heard and silent
    for segment in silent:
        assert segment["label"] is segment["probabilities"] is segment["arousal"] is None
        assert segment["active_fraction"] < 0.1
        assert segment["start_s"] >= 3.5 and segment["end_s"] <= 10.5 + 1e-3  # inside the noise
    for segment in heard:
        assert segment["active_fraction"] >= 0.1 and segment["label"] is not None
    mean = np.mean([[s["probabilities"][label] for label in LABELS] for s in heard], axis=0)
    np.testing.assert_allclose([body["probabilities"][k] for k in LABELS], mean, atol=1e-5)
    # About the 7 s of voice (the detector's frames are 32 ms; syllables have short gaps).
    assert 4.0 < body["speech_s"] < 7.5


def test_utterances_are_the_speech_between_pauses(client: TestClient) -> None:
    """Three turns with a second of silence and a second of room noise between them come back
    as three utterances, where they were spoken, each classified."""
    rng = np.random.default_rng(5)
    turns = [(0.5, 2.0), (3.5, 1.5), (6.5, 2.0)]  # (start_s, length_s)
    wave = np.zeros(9 * RATE, dtype=np.float32)
    wave[int(5.4 * RATE) : int(6.1 * RATE)] = 0.01 * rng.standard_normal(int(0.7 * RATE))
    for seed, (start_s, length_s) in enumerate(turns):
        voice = synth_speechlike(length_s, RATE, seed=seed)
        wave[int(start_s * RATE) : int(start_s * RATE) + voice.size] = voice
    body = post_file(client, encode(wave, RATE, subtype="FLOAT"), segments="utterances").json()
    assert body["segmentation"] == "utterances"
    segments = body["segments"]
    assert len(segments) == len(turns)
    for segment, (start_s, length_s) in zip(segments, turns, strict=True):
        assert segment["start_s"] == pytest.approx(start_s, abs=0.15)
        assert segment["end_s"] == pytest.approx(start_s + length_s, abs=0.25)
        assert segment["speech"] and segment["label"] in LABELS
        assert sum(segment["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    windows = post_file(client, encode(wave, RATE, subtype="FLOAT")).json()
    assert windows["segmentation"] == "windows" and windows["speech_s"] == body["speech_s"]
    bad = post_file(client, encode(wave, RATE, subtype="FLOAT"), segments="turns")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def stored_metadata(models_dir: Path, key: str) -> ModelMetadata:
    session = ort.InferenceSession(str(models_dir / f"{key}.onnx"))
    return ModelMetadata.from_onnx_props(session.get_modelmeta().custom_metadata_map)


def test_window_starts_cover_the_clip() -> None:
    assert window_starts(100, 100, 50) == [0]
    assert window_starts(40, 100, 50) == [0]
    assert window_starts(200, 100, 50) == [0, 50, 100]
    assert window_starts(230, 100, 50) == [0, 50, 100, 130]


def test_model_query_and_default(client: TestClient) -> None:
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    default = post_file(client, data).json()
    ce = post_file(client, data, model="ce").json()
    bce = post_file(client, data, path="/v1/predict", model="bce").json()
    # The fixture gives bce the higher validation macro-F1, so it is the default.
    assert default["model"] == {"name": "ser-bce", "loss": "bce", "version": "0.0.0-test"}
    assert ce["model"]["loss"] == "ce" and bce["model"]["loss"] == "bce"
    assert ce["probabilities"] != bce["probabilities"]


def test_default_model_setting(make_client) -> None:
    client = make_client(default_model="ce")
    body = post_file(client, wav_bytes(synth_speechlike(1.0, RATE), RATE)).json()
    assert body["model"]["loss"] == "ce"
    assert client.get("/readyz").json()["default_model"] == "ce"


def test_a_clip_of_several_batches_is_classified_chunk_by_chunk_the_same(
    make_client, models_dir: Path
) -> None:
    """More windows than one batch: classified on the lane thread a batch at a time (its
    features never all held); every window gets what the whole-clip computation gives."""
    wave = synth_speechlike(12.0, RATE, seed=2)
    body = post_file(make_client(max_batch_size=2), encode(wave, RATE, subtype="FLOAT"), model="ce")
    assert body.status_code == 200, body.text
    segments = body.json()["segments"]
    meta = stored_metadata(models_dir, "ce")
    start, end = trim_bounds(wave, meta.feature_config)
    offsets = window_starts(end - start, 56_000, 28_000)
    assert len(segments) == len(offsets) > 2
    windows = np.stack([wave[start + o : start + o + 56_000] for o in offsets])
    session = ort.InferenceSession(str(models_dir / "ce.onnx"))
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: log_mel(windows, meta.feature_config)})
    expected = probabilities(logits, meta.loss)
    got = np.array([[s["probabilities"][label] for label in LABELS] for s in segments])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert body.json()["timing_ms"]["inference"] > 0


def test_the_model_temperature_is_applied_and_shown(make_client, model_folder) -> None:
    folder = model_folder("ce")
    rewrite_metadata(folder / "ce.onnx", temperature=2.5)
    client = make_client(models_dir=folder)
    wave = synth_speechlike(3.0, RATE, seed=5)
    body = post_file(client, encode(wave, RATE, subtype="FLOAT")).json()
    got = np.array([body["probabilities"][label] for label in LABELS])
    np.testing.assert_allclose(got, offline_probabilities(folder, "ce", wave), atol=1e-5)
    meta = stored_metadata(folder, "ce")
    session = ort.InferenceSession(str(folder / "ce.onnx"))
    segment, _ = training_segment(wave, meta.feature_config)
    (logits,) = session.run(
        [OUTPUT_NAME], {INPUT_NAME: log_mel(segment[None], meta.feature_config)}
    )
    uncalibrated = probabilities(logits, "ce")[0]
    assert got.max() < uncalibrated.max()  # T > 1 softens
    assert got.argmax() == uncalibrated.argmax()
    (info,) = client.get("/v1/models").json()["models"]
    assert info["temperature"] == 2.5


@pytest.mark.parametrize(
    ("container", "codec", "content_type", "reported"),
    [("mp4", "aac", "audio/mp4", "MP4"), ("webm", "libopus", "audio/webm", "WEBM")],
)
def test_phone_and_browser_recordings_are_classified(
    client: TestClient, container: str, codec: str, content_type: str, reported: str
) -> None:
    data = av_bytes(synth_speechlike(4.0, 48_000, seed=3), 48_000, container, codec)
    for response in (
        post_file(client, data),
        client.post("/predict", content=data, headers={"content-type": content_type}),
    ):
        assert response.status_code == 200, response.text
        body = response.json()
        check_body(body)
        assert body["audio"] == {"format": reported, "sample_rate": 48_000, "channels": 1}


def test_mp3_is_classified(client: TestClient) -> None:
    data = encode(
        synth_speechlike(3.0, 44_100, seed=4), 44_100, fmt="MP3", subtype="MPEG_LAYER_III"
    )
    response = client.post("/predict", content=data, headers={"content-type": "audio/mpeg"})
    assert response.status_code == 200, response.text
    assert response.json()["audio"]["format"] == "MP3"
