"""Who may stream: limits on WebSocket connections per client and on sessions per process.

A connection counts against its client from the moment it is accepted; a session slot (the
process-wide ``stream_max_sessions``) is taken only once a valid ``start`` has arrived, so
sockets that never start cannot hold slots, and the start deadline closes them. A client is
the host of the ASGI ``client`` address: with ``--proxy-headers`` (``python -m app`` turns it
on) uvicorn has already replaced a trusted proxy's address there (``FORWARDED_ALLOW_IPS``: the
gateway's network in the image, the compose file and the manifests, never ``*``) by the
client address in its ``X-Forwarded-For``; the gateway writes that header itself, so clients
cannot choose it. uvicorn passes on whatever string the header holds, so the key is the
address normalised by :mod:`ipaddress` (at most 43 characters), or :data:`UNKNOWN_CLIENT`.
An IPv6 client is its /64 network: one subscriber, or one host, commonly holds a whole /64 and
could otherwise count as billions of clients; an IPv4-mapped IPv6 address is its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Final

from starlette.types import Scope

from app.settings import Settings

MAX_TRACKED_CLIENTS: Final[int] = 10_000  # bounds the memory of the attempt history
UNKNOWN_CLIENT: Final[str] = "unknown"
IPV6_PREFIX: Final[int] = 64  # the IPv6 network one client is counted as


class AdmissionRefused(Exception):
    """A connection or a session the limits do not allow; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def client_host(scope: Scope) -> str:
    """The client a connection counts against (see the module docstring): a normalised IP
    address, never a raw header string."""
    client = scope.get("client")
    if not client:
        return UNKNOWN_CLIENT
    try:
        address = ipaddress.ip_address(str(client[0])[:64])
    except ValueError:
        return UNKNOWN_CLIENT
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped.compressed
        return ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False).compressed
    return address.compressed


class StreamAdmission:
    """Connection and session accounting of one app.

    Args:
        max_sessions: started sessions at once in this process.
        max_per_client: open connections (started or not) of one client at once.
        max_attempts: connections one client may open within ``window_s`` seconds (refused
            attempts count too, so a client hammering the server stays refused).
        window_s: the length of the sliding window of ``max_attempts``.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        max_sessions: int,
        max_per_client: int,
        max_attempts: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sessions, self.max_per_client = max_sessions, max_per_client
        self.max_attempts, self.window_s = max_attempts, window_s
        self.active = 0  # started sessions
        self._clock = clock
        self._open: Counter[str] = Counter()
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamAdmission:
        return cls(
            max_sessions=settings.stream_max_sessions,
            max_per_client=settings.stream_max_sessions_per_client,
            max_attempts=settings.stream_max_connects_per_client,
            window_s=settings.stream_connect_window_s,
        )

    def connect(self, client: str) -> None:
        """Count a new connection of ``client``; pair with :meth:`disconnect` unless refused.

        Raises:
            AdmissionRefused: ``too_many_attempts`` or ``too_many_client_streams``.
        """
        now = self._clock()
        attempts = self._recent_attempts(client, now)
        attempts.append(now)
        if len(attempts) > self.max_attempts:
            raise AdmissionRefused(
                "too_many_attempts",
                f"more than {self.max_attempts} connections in {self.window_s:g} s from "
                f"{client}: wait before reconnecting",
            )
        if self._open[client] >= self.max_per_client:
            raise AdmissionRefused(
                "too_many_client_streams",
                f"{client} has {self._open[client]} streams open, the most one client may: "
                "close one first",
            )
        self._open[client] += 1

    def disconnect(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    def take_slot(self) -> None:
        """Take a session slot for a connection whose ``start`` was valid.

        Raises:
            AdmissionRefused: ``too_many_sessions``, all slots are taken.
        """
        if self.active >= self.max_sessions:
            raise AdmissionRefused(
                "too_many_sessions",
                f"the server is at its limit of {self.max_sessions} streams: retry later",
            )
        self.active += 1

    def release_slot(self) -> None:
        self.active -= 1

    def open_connections(self, client: str) -> int:
        return self._open[client]

    def _recent_attempts(self, client: str, now: float) -> deque[float]:
        """The attempt times of ``client`` inside the window (oldest first), kept at most
        ``max_attempts + 1`` long; forgets idle clients when too many are tracked."""
        attempts = self._attempts.pop(client, None)
        if attempts is None:
            attempts = deque(maxlen=self.max_attempts + 1)
        while attempts and attempts[0] <= now - self.window_s:
            attempts.popleft()
        self._attempts[client] = attempts  # most recently seen last
        while len(self._attempts) > MAX_TRACKED_CLIENTS:
            self._attempts.popitem(last=False)
        return attempts
