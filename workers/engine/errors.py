"""The one base of every error a user can act on, with the answer it deserves.

Engine and service errors derive from `DriftbenchError`; each class carries a
status hint. Only the API layer turns it into an HTTP response (app/api/errors.py)
and only the CLI turns it into an exit status, so neither the engine nor the data
layer knows about HTTP. The message names the problem: which layer, shape, limit.
"""

from __future__ import annotations

from typing import ClassVar


class DriftbenchError(Exception):
    """A failure explained to the user; `status` is the HTTP status it is answered with."""

    status: ClassVar[int] = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def is_users_fault(self) -> bool:
        """A 4xx: the request, the model or the inputs must change, not the machine."""
        return 400 <= self.status < 500


class InvalidRequest(DriftbenchError, ValueError):
    """Something the user sent cannot be used as it is: a model, inputs, a backend id."""

    status: ClassVar[int] = 422


def failure_reason(error: BaseException) -> str:
    """The error in one line a person can act on; allocation failures say so first.

    TensorFlow's out-of-memory error carries a whole graph traceback; the line that
    matters is the one naming the tensor it could not allocate.
    """
    text = str(error)
    if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next(
            (line for line in lines if "OOM when allocating" in line or "allocate" in line),
            lines[0] if lines else type(error).__name__,
        )
        return f"out of memory: {detail.split(' on /job:')[0]}"
    return f"{type(error).__name__}: {text}"
