"""A lean load generator for ``POST /predict``: pre-encoded requests on keep-alive sockets.

The benchmark runs its client on the server's machine, so whatever the client spends is taken
from the server and counted in every latency. A general-purpose client such as httpx spends
about 1.3 ms of CPU per upload here (building the multipart body, headers, response objects),
which is a third of the in-process work it is compared with. This client encodes the request
once, as ``curl -F file=@clip.wav`` would send it, and per request only writes those bytes and
reads the status line, the headers and ``Content-Length`` bytes of body: about 0.1 ms. It is
written here rather than taken from a package because the point is to do nothing else; the
benchmark keeps an httpx row beside it to show what a typical client adds.

Each of ``concurrency`` threads owns one connection and sends its requests one after another
(HTTP/1.1 keep-alive, no pipelining). Sockets release the GIL while they wait.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, BinaryIO

BOUNDARY = "bench-upload-boundary"


def multipart_request(path: str, wav: bytes, host: str = "127.0.0.1") -> bytes:
    """The whole HTTP/1.1 request that uploads ``wav`` as the multipart field ``file``."""
    body = b"".join(
        [
            f"--{BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="file"; filename="clip.wav"\r\n',
            b"Content-Type: audio/wav\r\n\r\n",
            wav,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        ]
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ResponseError(RuntimeError):
    """The server answered something other than a 200 with a Content-Length body."""


def read_response(stream: BinaryIO) -> tuple[int, bytes]:
    """One response from ``stream``: (status, body). Needs a Content-Length (no chunking)."""
    status_line = stream.readline()
    if not status_line:
        raise ResponseError("the server closed the connection")
    status = int(status_line.split()[1])
    length = None
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ResponseError(f"a {status} response without Content-Length")
    return status, stream.read(length)


class Connection:
    """One keep-alive connection that sends the same request again and again."""

    def __init__(self, port: int, request: bytes, host: str = "127.0.0.1") -> None:
        self.request = request
        self.sock = socket.create_connection((host, port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")

    def send(self) -> bytes:
        """Send the request once; the body of the 200 response."""
        self.sock.sendall(self.request)
        status, body = read_response(self.stream)
        if status != 200:
            raise ResponseError(f"HTTP {status}: {body[:200]!r}")
        return body

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def run_load(
    ports: Sequence[int], request: bytes, requests: int, concurrency: int
) -> dict[str, Any]:
    """``requests`` requests from ``concurrency`` connections at once, after a warm-up.
    Connection ``i`` goes to ``ports[i % len(ports)]`` (several replicas: an even spread, as
    a least-connection balancer would keep it).

    Returns:
        ``latencies_ms`` (one per request), ``wall_s`` for all of them, and ``client_cpu_s``:
        this process's CPU time over the same span (all its threads).
    """
    connections = [Connection(ports[i % len(ports)], request) for i in range(concurrency)]
    try:
        for connection in connections:  # warm-up; the first answer must be JSON
            json.loads(connection.send())
        latencies: list[float] = []
        remaining = [requests]
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker(connection: Connection) -> None:
            try:
                while True:
                    with lock:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    start = time.perf_counter()
                    connection.send()
                    latencies.append((time.perf_counter() - start) * 1000)
            except BaseException as e:  # re-raised in the caller
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(c,)) for c in connections]
        start, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    finally:
        for connection in connections:
            connection.close()
    if errors:
        raise errors[0]
    return {"latencies_ms": latencies, "wall_s": wall_s, "client_cpu_s": cpu_s}
