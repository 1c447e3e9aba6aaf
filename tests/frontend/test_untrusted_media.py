"""Untrusted media before and inside the parsers: the kind of a file is decided from its first
bytes, FFmpeg opens only the allow-listed demuxers with no protocol for what the media names,
a file of many streams or a stream that changes format is refused, a header that lies about
the length is caught by what is decoded, and a header slow to parse is refused."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from app import containers
from app.audio import (
    AudioError,
    LaneBudgetExceeded,
    SlowHeaderError,
    UnsupportedAudioError,
    decode_audio,
    probe_audio,
)
from app.sniff import ACCEPTED, UnknownMediaError, identify
from tests.conftest import av_bytes, synth_speechlike, wav_bytes
from tests.hostile_media import (
    HLS,
    SDP,
    adts_format_change,
    ffconcat,
    lying_webm,
    many_tracks_mkv,
    padded_m4a,
    padded_wav,
)

REPO = Path(__file__).resolve().parents[2]


def sndfile(fmt: str, subtype: str | None = None, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, synth_speechlike(0.5, rate), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


ACCEPTED_FILES = {
    "WAV": lambda: wav_bytes(synth_speechlike(0.5, 16_000), 16_000),
    "FLAC": lambda: sndfile("FLAC"),
    "OGG": lambda: sndfile("OGG", "OPUS", 48_000),
    "MP3": lambda: sndfile("MP3", rate=44_100),
    "MP4": lambda: av_bytes(synth_speechlike(0.5, 44_100), 44_100, "mp4", "aac"),
    "WEBM": lambda: av_bytes(synth_speechlike(0.5, 48_000), 48_000, "webm", "libopus"),
    "AAC": lambda: av_bytes(synth_speechlike(0.5, 44_100), 44_100, "adts", "aac"),
}


def test_every_accepted_kind_is_tested() -> None:
    assert {kind.name for kind in ACCEPTED} == set(ACCEPTED_FILES)


@pytest.mark.parametrize("name", list(ACCEPTED_FILES))
def test_each_accepted_file_is_identified_and_decodes(name: str) -> None:
    data = ACCEPTED_FILES[name]()
    assert identify(data[:12]).name == name
    audio = decode_audio(data)
    assert audio.source_format == name
    assert audio.duration_s == pytest.approx(0.5, abs=0.1)


REFUSED = {
    "sdp": (SDP, "text"),
    "hls": (HLS, "text"),
    "ffconcat": (ffconcat("models/ser-ce.onnx"), "text"),
    "aiff": (sndfile("AIFF", "PCM_16"), "AIFF files are not accepted"),
    "flv": (av_bytes(synth_speechlike(0.5, 44_100), 44_100, "flv", "aac"), "FLV files"),
    "binary": (bytes(range(256)) * 4, "not audio in a format read here"),
}


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if FFmpeg is asked to open anything."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("FFmpeg was asked to open a file that should be refused unread")

    monkeypatch.setattr(containers.av, "open", refuse)


@pytest.mark.parametrize("name", list(REFUSED))
def test_files_of_no_accepted_kind_are_refused_before_any_parser(name: str, no_ffmpeg) -> None:
    data, reason = REFUSED[name]
    with pytest.raises(UnknownMediaError):
        identify(data[:12])
    with pytest.raises(UnsupportedAudioError, match=reason) as raised:
        decode_audio(data)
    assert "send WAV, FLAC" in str(raised.value)


def test_ffmpeg_gets_the_named_demuxer_and_the_bounded_options(monkeypatch) -> None:
    seen: dict[str, Any] = {}
    real_open = av.open

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(containers.av, "open", spy)
    decode_audio(ACCEPTED_FILES["WEBM"]())
    assert seen["format"] == "matroska"
    options = seen["container_options"]
    assert options["protocol_whitelist"] == "none"
    assert int(options["probesize"]) <= 1 << 20
    assert int(options["max_streams"]) == containers.MAX_STREAMS + 1


def test_the_open_options_give_no_oracle_on_the_servers_files() -> None:
    """Even a demuxer that opens paths (concat) cannot, under OPEN_OPTIONS: a file that
    exists and one that does not give the same error, and nothing is read."""
    errors = []
    for path in ("models/ser-ce.onnx", "models/no-such-file.onnx"):
        with pytest.raises(av.FFmpegError) as raised:
            av.open(
                io.BytesIO(ffconcat(str(REPO / path))),
                format="concat",
                container_options={**containers.OPEN_OPTIONS, "safe": "0"},
            )
        errors.append(type(raised.value))
    assert errors[0] is errors[1] is av.error.ArgumentError


def test_a_thousand_tracks_are_refused_without_a_thousand_decoders() -> None:
    with pytest.raises(UnsupportedAudioError, match="more than 8 streams") as raised:
        decode_audio(many_tracks_mkv(1000))
    assert raised.value.code == "unsupported_audio"


def test_a_few_tracks_are_still_read() -> None:
    audio = decode_audio(many_tracks_mkv(containers.MAX_STREAMS))
    assert audio.source_format == "WEBM"


def test_an_adts_stream_that_changes_format_is_a_422_error_not_a_crash() -> None:
    with pytest.raises(AudioError, match="changes its sample rate") as raised:
        decode_audio(adts_format_change())
    assert raised.value.code == "invalid_audio"


def test_a_header_that_understates_the_length_is_caught_by_what_is_decoded() -> None:
    data = lying_webm(12.0, claimed_s=1.0)
    assert probe_audio(data).frames == 48_000  # what the header says
    budget = 5 * 48_000
    with pytest.raises(LaneBudgetExceeded):
        decode_audio(data, lane_samples=budget)  # the header alone would pass
    assert decode_audio(data).duration_s == pytest.approx(12.0, abs=0.1)


def test_a_liar_costs_the_short_lane_its_stated_length_not_the_whole_budget() -> None:
    with pytest.raises(LaneBudgetExceeded) as raised:
        decode_audio(lying_webm(12.0, claimed_s=1.0), lane_samples=11 * 48_000)
    decoded_samples = raised.value.args[0]
    assert decoded_samples <= 2.1 * 48_000  # 1 s stated + 1 s of slack + one Opus frame


def test_a_stated_length_over_the_lane_budget_moves_before_decoding() -> None:
    data = wav_bytes(synth_speechlike(3.0, 16_000), 16_000)
    with pytest.raises(LaneBudgetExceeded):
        decode_audio(data, lane_samples=16_000)


def test_a_header_slow_to_parse_is_refused() -> None:
    data = padded_m4a(300_000)
    with pytest.raises(SlowHeaderError, match="header took") as raised:
        decode_audio(data, max_header_s=0.01)
    assert raised.value.code == "invalid_audio"
    assert decode_audio(ACCEPTED_FILES["MP4"](), max_header_s=5.0).duration_s > 0.4


def test_a_wav_of_empty_chunks_is_refused_by_libsndfile_alone(no_ffmpeg) -> None:
    """Refused as the WAV it claims to be; no second parser is tried."""
    with pytest.raises(UnsupportedAudioError, match="could not read the WAV file"):
        decode_audio(padded_wav(200_000))


def test_a_path_is_identified_like_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.sdp"
    path.write_bytes(SDP)
    with pytest.raises(UnsupportedAudioError, match="text"):
        decode_audio(path)
    wav = tmp_path / "a.wav"
    wav.write_bytes(ACCEPTED_FILES["WAV"]())
    assert decode_audio(wav).samples.dtype == np.float32
