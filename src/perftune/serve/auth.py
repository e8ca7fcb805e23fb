"""Bearer-token auth: one FastAPI dependency, attached to each route by its :class:`Access` level.

Which routes ask for the token is decided here, once, from the settings: the route table
(:data:`perftune.serve.app.ROUTES`) names each route's level and :meth:`BearerAuth.dependencies` turns it into
the route's dependencies. A route that asks for nothing gets no dependency, so an open route pays nothing.
"""

from __future__ import annotations

import hmac
from enum import Enum

from fastapi import Depends, Request, params

from perftune.serve.errors import RequestError, Unauthorized
from perftune.serve.settings import ServeSettings

__all__ = ["Access", "BearerAuth"]


class Access(Enum):
    """Who may call a route."""

    OPEN = "open"  # anyone, always
    HEALTH = "health"  # the token, if the server has one and --protect-health
    METRICS = "metrics"  # the token, if the server has one and --protect-metrics
    CLIENT = "client"  # the token, if the server has one (inference, model metadata, feedback)
    MANAGEMENT = "management"  # the token, always: a server without one refuses these routes (403)


class BearerAuth:
    """The server's token (from ``--token-file``; None: no auth) and the routes that ask for it."""

    def __init__(self, settings: ServeSettings) -> None:
        self.token = settings.token()
        self._asks = {
            Access.OPEN: False,
            Access.HEALTH: settings.protect_health,
            Access.METRICS: settings.protect_metrics,
            Access.CLIENT: True,
            Access.MANAGEMENT: True,
        }

    def dependencies(self, access: Access) -> list[params.Depends]:
        """The dependencies of a route of level ``access``: the token check where it is asked for, else none."""
        if access is Access.MANAGEMENT and self.token is None:
            return [Depends(self.refuse_management)]
        return [Depends(self.require_token)] if self.token is not None and self._asks[access] else []

    def authorized(self, header: str) -> bool:
        """Whether an ``Authorization`` header value carries the token (compared in constant time)."""
        if self.token is None:
            return True
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    async def require_token(self, request: Request) -> None:
        """The auth dependency. Raises :class:`Unauthorized` (401) unless the request carries the token."""
        if not self.authorized(request.headers.get("authorization", "")):
            raise Unauthorized()

    async def refuse_management(self) -> None:
        """Management routes on a server without a token: always a 403."""
        raise RequestError(403, "management endpoints need bearer-token auth; start the server with --token-file")
