"""A client for the service: Python API (:class:`Client`, :class:`AsyncClient`) and the ``ser``
command (:mod:`ser_client.cli`).

A distribution of its own (``ser-client``, ``client/`` in the service's repository), named so
that it cannot clash with a user's own ``app`` package. It imports nothing of the server:
httpx, websockets, soundfile and numpy are all it needs (``sounddevice`` too, for the
microphone: the ``mic`` extra).
"""

from ser_client.api import AsyncClient, Client, stream_url
from ser_client.results import (
    Prediction,
    Segment,
    ServiceError,
    StreamPrediction,
    StreamSummary,
)
from ser_client.sources import FileSource, MicrophoneError, MicrophoneSource, file_source

__all__ = [
    "AsyncClient",
    "Client",
    "FileSource",
    "MicrophoneError",
    "MicrophoneSource",
    "Prediction",
    "Segment",
    "ServiceError",
    "StreamPrediction",
    "StreamSummary",
    "file_source",
    "stream_url",
]
