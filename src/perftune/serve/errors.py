"""What the inference server refuses, each with the HTTP status it is answered with.

A refusal is a :class:`RequestError` (status, message, headers) raised where the problem is found — the
protocol parsers, the data plane, the auth dependency — and rendered as ``{"error": message}`` by the one
exception handler of :mod:`perftune.serve.app`. Messages follow :mod:`perftune.errors`: lowercase, ``what is
wrong; how to fix it``, one line, never the request's data.

A failure of ours, or of the model, is an :class:`InternalError`: a 500 whose message names an error id; the
traceback goes to the server log under that id, never to the client.

A client that closes the connection before its body is complete is a :class:`ClientAborted`: no answer reaches
it, the metrics count it under 499 (a client error, see :mod:`perftune.serve.metrics`), and the log says so in
one INFO line — it is the client's doing, not a failure to trace.
"""

from __future__ import annotations

import logging
import uuid

from perftune.serve.metrics import CLIENT_ABORT

log = logging.getLogger("perftune.serve")

__all__ = ["ClientAborted", "InternalError", "RequestError", "Unauthorized"]


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a message safe to return, and response ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        # names from the request (tensor names, keys, columns) may hold line breaks: the message stays one line
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class Unauthorized(RequestError):
    """No bearer token, or not the server's."""

    def __init__(self) -> None:
        super().__init__(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})


class ClientAborted(RequestError):
    """The client went away before sending the whole body: counted as 499, logged in one INFO line."""

    def __init__(self, received: int, declared: str | None) -> None:
        of = f" of {declared}" if declared is not None else ""
        super().__init__(CLIENT_ABORT, f"the client closed the connection after {received}{of} bytes of its body")
        log.info("%s; not answered, counted as %d", self.message, CLIENT_ABORT)


class InternalError(RequestError):
    """A 500 that names an error id; create it with :meth:`logged` inside the ``except`` block."""

    def __init__(self, what: str) -> None:
        self.error_id = uuid.uuid4().hex[:12]
        super().__init__(500, f"{what}; error id {self.error_id} is in the server log")

    @classmethod
    def logged(cls, what: str, context: str, *args: object) -> InternalError:
        """The error for the exception being handled, whose traceback is logged as ``context % (id, *args)``."""
        error = cls(what)
        log.exception(context, error.error_id, *args)
        return error
