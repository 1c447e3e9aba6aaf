"""The upload budget (app/api/upload_budget.py): bodies are admitted by the bytes they will
hold before a byte of them is read, and what is refused is a 503 with Retry-After."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.api.upload_budget import UploadBudget
from app.errors import ServerBusyError
from tests.conftest import synth_speechlike, wav_bytes
from tests.live import LiveServer, closed_within, live_server, peak_rss_growth_mb
from tests.service.conftest import ClientFactory

MAX_UPLOAD = 19_900_000  # the uploads, under the default 20 MB limit
BUDGET = 128_000_000  # SER_UPLOAD_BUFFER_BYTES's default


def test_a_reservation_is_refused_past_the_limit_and_returned_on_exit() -> None:
    budget = UploadBudget(100)
    with budget.reserve(60):
        with pytest.raises(ServerBusyError) as refused, budget.reserve(41):
            pass
        assert refused.value.retry_after_s >= 1
        with budget.reserve(40):
            assert budget.held_bytes == 100
    assert budget.held_bytes == 0
    with pytest.raises(RuntimeError), budget.reserve(100):
        raise RuntimeError("the work failed")
    assert budget.held_bytes == 0


def test_a_spent_budget_is_a_503_with_retry_after(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=100_000, upload_buffer_bytes=300_000)
    audio = wav_bytes(synth_speechlike(2.0, 16_000, seed=3), 16_000)
    with client.app.state.upload_budget.reserve(250_000):  # type: ignore[attr-defined]
        refused = client.post("/predict", content=audio, headers={"content-type": "audio/wav"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_busy"
    assert int(refused.headers["retry-after"]) >= 1
    assert "retry" in refused.json()["error"]["message"]
    accepted = client.post("/predict", content=audio, headers={"content-type": "audio/wav"})
    assert accepted.status_code == 200, accepted.text


def test_a_budget_smaller_than_one_upload_is_refused_at_start(make_client: ClientFactory) -> None:
    with pytest.raises(ValueError, match="SER_UPLOAD_BUFFER_BYTES"):
        make_client(max_upload_bytes=1_000_000, upload_buffer_bytes=1_000_000)


def refused_wav_head(size_bytes: int) -> bytes:
    """The 44-byte header of a PCM WAV of ``size_bytes`` in all, at 4 kHz (below the 8 kHz
    floor): read whole, then refused (422) from its header without decoding, so that what
    the process holds is the bodies."""
    data_bytes = size_bytes - 44
    return (
        b"RIFF"
        + struct.pack("<I", size_bytes - 8)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 4000, 8000, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("budget") / "server.log"
    # Room in the long lane for every admitted upload (its default queue holds four): what
    # refuses here is the budget alone.
    with live_server(models_dir, log, long_work_queue_limit=8) as running:
        yield running


def read_answer(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    _, data = closed_within(sock, timeout_s)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["audio/wav", "multipart/form-data; boundary=b"])
def test_thirty_two_max_size_uploads_hold_no_more_than_the_budget(
    server: LiveServer, kind: str
) -> None:
    """32 uploads of 19.9 MB declare themselves at once: the six the budget holds are read,
    the rest are answered 503 from their headers, and the process grows by about the six."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {MAX_UPLOAD}\r\n\r\n"
    ).encode()
    wav = refused_wav_head(MAX_UPLOAD - 200)
    if kind.startswith("multipart"):
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        prefix, suffix = part + wav, b"\r\n--b--\r\n"
    else:
        prefix, suffix = wav + b"\0" * 200, b""
    filler = MAX_UPLOAD - len(prefix) - len(suffix)
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(32)]
    try:
        for sock in socks:
            sock.sendall(head)
        time.sleep(1.0)  # every request is admitted or refused from its headers alone
        refused, admitted = [], []
        for sock in socks:
            sock.setblocking(False)
            try:
                waiting = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                waiting = b""
            sock.setblocking(True)
            (refused if waiting else admitted).append(sock)
        assert len(admitted) == BUDGET // MAX_UPLOAD, len(admitted)
        for sock in refused:
            status, headers, body = read_answer(sock, 5)
            assert status == 503 and int(headers["retry-after"]) >= 1
            assert json.loads(body)["error"]["code"] == "server_busy"

        def upload(sock: socket.socket) -> int:
            sock.sendall(prefix)
            chunk = b"\0" * (1 << 20)
            for start in range(0, filler, len(chunk)):
                sock.sendall(chunk[: filler - start])
            sock.sendall(suffix)
            return read_answer(sock, 60)[0]

        def all_admitted() -> list[int]:
            with ThreadPoolExecutor(len(admitted)) as pool:
                return list(pool.map(upload, admitted))

        statuses, memory = peak_rss_growth_mb(server.process.pid, all_admitted)
    finally:
        for sock in socks:
            sock.close()
    assert statuses == [422] * len(admitted)  # read whole, then refused by its rate
    print(f"{kind}: {len(admitted)} admitted, {memory}")
    assert memory["growth_mb"] < 1.5 * BUDGET / 2**20, memory
    assert server.metric("ser_upload_buffer_bytes") == 0
