"""Admission of upload bodies by the bytes they will hold: checked before a byte is read.

Every ``/predict`` reserves the bytes its body will take (its ``Content-Length``, or the upload
limit when the length is not declared) from one budget per process, ``SER_UPLOAD_BUFFER_BYTES``,
and keeps them until its answer is made; the body is read only once the reservation holds.
When the budget is spent, the request is answered 503 ``server_busy`` with ``Retry-After``
from its headers alone, so a crowd of large uploads can never buffer more than the budget at
once (the work lanes bound decoding, this bounds what waits for them). The default keeps six
uploads of the 20 MB maximum: far under a 1 GiB replica with the models and the lanes' work.

All of it runs on the event loop thread, between awaits: no lock is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from app import metrics
from app.errors import ServerBusyError

RETRY_AFTER_S: Final[int] = 1


class UploadBudget:
    """The bytes of upload bodies this process holds at once, under ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held_bytes = 0

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the block.

        Raises:
            ServerBusyError: (503) the budget has less than ``nbytes`` left.
        """
        if self.held_bytes + nbytes > self.limit_bytes:
            metrics.UPLOAD_BUDGET_REFUSALS.inc()
            raise ServerBusyError(
                f"the server is busy: it holds {self.held_bytes / 1e6:.1f} MB of uploads "
                f"(of {self.limit_bytes / 1e6:g} MB) and this one declares "
                f"{nbytes / 1e6:.1f} MB; retry in {RETRY_AFTER_S} s",
                retry_after_s=RETRY_AFTER_S,
            )
        self.held_bytes += nbytes
        metrics.UPLOAD_BUFFER_BYTES.set(self.held_bytes)
        try:
            yield
        finally:
            self.held_bytes -= nbytes
            metrics.UPLOAD_BUFFER_BYTES.set(self.held_bytes)
