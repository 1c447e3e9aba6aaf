"""What an upload is, from its first bytes, before any parser sees it.

FFmpeg left to itself probes a file against every demuxer it has and opens whichever claims
it: an SDP text makes it bind UDP ports and wait for RTP, an ffconcat or HLS playlist makes it
open paths and URLs named inside the media, an image2 pattern reads files from the disk. So the
kind of a file is decided here, from its magic bytes, against a short allow-list; a file that
matches none is refused before libsndfile or FFmpeg touches it, and those FFmpeg reads are
opened with the one demuxer named here (:mod:`app.containers`), never a probe.

These few byte patterns are written out here rather than asked of a library: libmagic is not
in the serving install, and FFmpeg's own probe is exactly the thing that must not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

HEAD_BYTES: Final[int] = 12  # the longest pattern below reads bytes 0-11


@dataclass(frozen=True)
class MediaKind:
    """An accepted kind of file: the format name reported to clients, and the FFmpeg demuxer
    that reads it (None: libsndfile reads it)."""

    name: str
    demuxer: str | None = None


WAV: Final = MediaKind("WAV")
FLAC: Final = MediaKind("FLAC")
OGG: Final = MediaKind("OGG")
MP3: Final = MediaKind("MP3")
MP4: Final = MediaKind("MP4", "mp4")  # FFmpeg's mov,mp4,m4a,... demuxer, by its short name
WEBM: Final = MediaKind("WEBM", "matroska")  # matroska,webm
AAC: Final = MediaKind("AAC", "aac")  # raw ADTS
ACCEPTED: Final[tuple[MediaKind, ...]] = (WAV, FLAC, OGG, MP3, MP4, WEBM, AAC)

# Formats people do send, named in the refusal so they know what they sent.
_KNOWN_REFUSED: Final[dict[bytes, str]] = {
    b"FORM": "AIFF",
    b".snd": "AU",
    b"FLV\x01": "FLV",
    b"caff": "CAF",
    b"%PDF": "PDF",
}


class UnknownMediaError(ValueError):
    """The first bytes match no accepted kind of file."""


def _mpeg_sync(head: bytes) -> int | None:
    """The MPEG audio layer field (0-3) when ``head`` starts with a frame sync, else None.
    MP3 frames have layer 1-3; ADTS (AAC) frames have 0."""
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    return (head[1] >> 1) & 0x3


def identify(head: bytes) -> MediaKind:
    """The kind of file that starts with ``head`` (at least :data:`HEAD_BYTES` of it, when
    the file has that many).

    Raises:
        UnknownMediaError: not one of :data:`ACCEPTED`; the message names what it looks like.
    """
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return WAV
    if head[:4] == b"fLaC":
        return FLAC
    if head[:4] == b"OggS":
        return OGG
    if head[:3] == b"ID3":
        return MP3  # an ID3 tag, then (libsndfile checks) MPEG frames
    if head[4:8] == b"ftyp":
        return MP4
    if head[:4] == b"\x1a\x45\xdf\xa3":  # the EBML magic of Matroska and WebM
        return WEBM
    layer = _mpeg_sync(head)
    if layer == 0 and head[1] & 0xF0 == 0xF0:  # ADTS: a 12-bit sync and layer 0
        return AAC
    if layer:
        return MP3
    raise UnknownMediaError(_describe(head))


def _describe(head: bytes) -> str:
    for magic, name in _KNOWN_REFUSED.items():
        if head.startswith(magic):
            return f"{name} files are not accepted"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "the upload is text, not audio"  # SDP, playlists, ffconcat scripts, ...
    return "the upload is not audio in a format read here"


OGG_PAGE_HEADER_BYTES: Final[int] = 27  # "OggS", version, type, granule, serial, seq, crc, count
_OGG_BOS: Final[int] = 0x02  # header type flag: first page of a logical stream


def ogg_links(data: bytes) -> int:
    """1 for an ordinary Ogg file, 2 when it is chained (at least two links): a new logical
    stream beginning after the previous one's pages, which libsndfile does not follow (it
    reads the first link and stops, silently). Walks the page headers only; stops at the
    first byte that is not a page (the decoder then says what is wrong)."""
    links, offset, in_headers = 0, 0, False
    while offset + OGG_PAGE_HEADER_BYTES <= len(data) and data[offset : offset + 4] == b"OggS":
        begins_stream = data[offset + 5] & _OGG_BOS
        if begins_stream and not in_headers:
            links += 1  # streams that begin together (grouped) are one link
            if links > 1:
                return links  # chained: how long the chain is does not matter
        in_headers = bool(begins_stream)
        segments = data[offset + 26]
        table = data[offset + OGG_PAGE_HEADER_BYTES : offset + OGG_PAGE_HEADER_BYTES + segments]
        offset += OGG_PAGE_HEADER_BYTES + segments + sum(table)
    return max(links, 1)
