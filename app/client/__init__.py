"""A client for the service: Python API (:class:`Client`, :class:`AsyncClient`) and the ``ser``
command (:mod:`app.client.cli`). It imports nothing of the server: httpx, websockets, soundfile
and numpy are all it needs (``sounddevice`` too, for the microphone).
"""

from app.client.api import AsyncClient, Client, stream_url
from app.client.results import (
    Prediction,
    Segment,
    ServiceError,
    StreamPrediction,
    StreamSummary,
)
from app.client.sources import FileSource, MicrophoneError, MicrophoneSource, file_source

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
