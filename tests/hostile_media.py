"""Files built to attack a media parser, made here from the same libraries as the fixtures:
texts that make FFmpeg open sockets or files, a Matroska file of a thousand tracks, an ADTS
stream whose format changes, a WebM whose header lies about its length, headers padded to be
slow to parse."""

from __future__ import annotations

import io
import struct

import numpy as np

from tests.conftest import av_bytes, synth_speechlike, wav_bytes

SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 7300 RTP/AVP 0\r\n"
)
HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.aac\n#EXT-X-ENDLIST\n"


def ffconcat(path: str) -> bytes:
    """An ffconcat script naming a file of the server."""
    return f"ffconcat version 1.0\nfile {path}\n".encode()


def many_tracks_mkv(tracks: int = 1000, rate: int = 48_000) -> bytes:
    """A small Matroska file of ``tracks`` Opus tracks of 20 ms of silence each."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        streams = [out.add_stream("libopus", rate=rate, layout="mono") for _ in range(tracks)]
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), "fltp", "mono")
        frame.sample_rate = rate
        for stream in streams:
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
    return buffer.getvalue()


def adts_format_change() -> bytes:
    """Raw ADTS AAC: 1 s of mono at 44.1 kHz, then 1 s of stereo at 22.05 kHz."""
    first = av_bytes(synth_speechlike(1.0, 44_100), 44_100, "adts", "aac")
    stereo = np.stack([synth_speechlike(1.0, 22_050, seed=1)] * 2, axis=1)
    return first + av_bytes(stereo, 22_050, "adts", "aac")


def lying_webm(seconds: float, claimed_s: float = 1.0, rate: int = 48_000) -> bytes:
    """A mono WebM (Opus) of ``seconds`` whose Segment Info says it lasts ``claimed_s``."""
    data = bytearray(av_bytes(synth_speechlike(seconds, rate), rate, "webm", "libopus"))
    at = data.find(b"\x44\x89")  # the Duration element (float, in TimecodeScale units: ms)
    size = data[at + 2] & 0x7F
    assert at > 0 and size in (4, 8), "no Duration element where expected"
    struct.pack_into(">d" if size == 8 else ">f", data, at + 3, claimed_s * 1000.0)
    return bytes(data)


def padded_wav(empty_chunks: int) -> bytes:
    """A 1 s WAV with ``empty_chunks`` empty unknown chunks between its fmt and data chunks."""
    wav = wav_bytes(synth_speechlike(1.0, 16_000), 16_000)
    data_at = wav.find(b"data")
    body = wav[12:data_at] + b"junk\x00\x00\x00\x00" * empty_chunks + wav[data_at:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def padded_m4a(free_atoms: int) -> bytes:
    """A 1 s M4A with ``free_atoms`` empty ``free`` atoms after its ``ftyp``: FFmpeg's MP4
    demuxer walks every one of them before it finds the audio. (The sample offsets in its
    ``moov`` no longer point at the audio: this file is for header tests only.)"""
    m4a = av_bytes(synth_speechlike(1.0, 44_100), 44_100, "mp4", "aac")
    ftyp_end = struct.unpack(">I", m4a[:4])[0]
    return m4a[:ftyp_end] + b"\x00\x00\x00\x08free" * free_atoms + m4a[ftyp_end:]
