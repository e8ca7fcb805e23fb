"""The inference server's HTTP application: a route table around a data plane, and one exception handler.

Layers, as MLServer splits its server (``rest/app.py``, ``rest/endpoints.py``, ``handlers/dataplane.py``):

* :data:`ROUTES`, the route table: path, method, endpoint, who may call it (:class:`~perftune.serve.auth.Access`,
  turned into the one auth dependency by :class:`~perftune.serve.auth.BearerAuth`), tag, documented body, and
  for an inference route the protocol it is counted under in ``perftune_requests_total``;
* :mod:`perftune.serve.endpoints` does HTTP only; :mod:`perftune.serve.dataplane` holds the logic;
* every refusal is a :class:`~perftune.serve.errors.RequestError` carrying its status, raised where it is found;
  :func:`error_response`, the one exception handler, renders it — and FastAPI's own 404, 405 and 422 — as
  ``{"error": message}``;
* :class:`ServedRoute` turns an unexpected exception into a 500 naming an error id (the traceback is logged under
  it) and, on an inference route, counts every answer by its status (:class:`Meter`).

The hot path reads the raw body, parses it with orjson, validates it against the signature
(:mod:`perftune.serve.protocol`) and calls the scikit-learn model on a float matrix; pydantic models describe
the bodies in ``/openapi.json`` (:mod:`perftune.serve.openapi`) without sitting on that path.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from perftune import __version__
from perftune.serve.auth import Access, BearerAuth
from perftune.serve.dataplane import DataPlane, Endpoint, Reply
from perftune.serve.endpoints import Endpoints, render
from perftune.serve.errors import InternalError, RequestError
from perftune.serve.metrics import OTHER_MODEL
from perftune.serve.openapi import (
    FeedbackRequest,
    InferRequest,
    InvocationsRequest,
    LoadRequest,
    openapi_schema,
    request_body,
)
from perftune.serve.server import Server
from perftune.serve.settings import SETTINGS_ENV, ServeSettings

__all__ = ["ROUTES", "Meter", "Route", "ServeSettings", "ServedRoute", "create_app", "create_app_from_env"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
REFUSALS = (RequestError, StarletteHTTPException, RequestValidationError)  # what error_response renders


@dataclass(frozen=True)
class Route:
    """One row of the route table."""

    path: str
    method: str
    endpoint: str  # the name of an :class:`~perftune.serve.endpoints.Endpoints` method
    access: Access
    tag: str
    body: type[BaseModel] | None = None  # the documented request body
    csv: bool = False  # the body may also be text/csv
    meter: Endpoint | None = None  # an inference route, counted in perftune_requests_total under this protocol


H, C, M = Access.HEALTH, Access.CLIENT, Access.MANAGEMENT  # who may call: see Access
ROUTES = (
    Route("/v2/health/live", "GET", "live", H, "health"),
    Route("/v2/health/ready", "GET", "ready", H, "health"),
    Route("/health", "GET", "ping", H, "health"),
    Route("/ping", "GET", "ping", H, "health"),
    Route("/v2", "GET", "server_metadata", Access.OPEN, "metadata"),
    Route("/v2/models/{name}", "GET", "metadata", C, "metadata"),
    Route("/v2/models/{name}/versions/{version}", "GET", "metadata_version", C, "metadata"),
    Route("/v2/models/{name}/ready", "GET", "is_ready", C, "health"),
    Route("/v2/models/{name}/versions/{version}/ready", "GET", "is_ready_version", C, "health"),
    Route("/v2/models/{name}/infer", "POST", "infer_v2", C, "inference", InferRequest, meter="v2"),
    Route("/v2/models/{name}/versions/{version}/infer", "POST", "infer_v2_version", C, "inference", InferRequest,
          meter="v2"),
    Route("/invocations", "POST", "invocations", C, "inference", InvocationsRequest, csv=True, meter="invocations"),
    Route("/v2/models/{name}/explain", "POST", "explain", C, "explanations", InferRequest),
    Route("/v2/models/{name}/versions/{version}/explain", "POST", "explain_version", C, "explanations", InferRequest),
    Route("/v2/models/{name}/feedback", "POST", "feedback", C, "feedback", FeedbackRequest),
    Route("/metrics", "GET", "prometheus", Access.METRICS, "metrics"),
    Route("/v2/repository/index", "POST", "repository_index", M, "management"),
    Route("/v2/repository/models/{name}/load", "POST", "load", M, "management", LoadRequest),
    Route("/v2/repository/models/{name}/unload", "POST", "unload", M, "management"),
    Route("/admin/reload", "POST", "reload", M, "management"),
)  # fmt: skip
DOCUMENTED_BODIES = tuple(dict.fromkeys(route.body for route in ROUTES if route.body))


class Meter:
    """``perftune_requests_total`` and ``perftune_request_duration_seconds`` around an inference route.

    Every answer is counted by its status, whatever produced it — the auth dependency, a refusal of the data
    plane, the model, a bug — so a failed answer is never counted as 200; a client that went away before its body
    was complete is counted as 499, not as a 500 (:class:`~perftune.serve.errors.ClientAborted`). The version label
    is the one that answered (``X-Model-Version``), or for a refusal the one served when the request came (``-``:
    unloaded); a request for another model's URL is counted under the model :data:`OTHER_MODEL`.
    """

    def __init__(self, server: Server, endpoint: Endpoint) -> None:
        self.server, self.endpoint = server, endpoint

    def around(self, handle: Handler) -> Handler:
        server, metrics, endpoint = self.server, self.server.metrics, self.endpoint

        async def metered(request: Request) -> Response:
            started = time.perf_counter()
            model = server.model
            version = model.version if model else "-"
            # a request for another model's URL (a 404) is not this model's error: its error rate would count it
            name = server.name if request.path_params.get("name", server.name) == server.name else OTHER_MODEL
            metrics.in_flight.inc()
            code = 500
            try:
                response = await handle(request)
                code, version = response.status_code, response.headers.get("x-model-version", version)
                return response
            except RequestError as exc:
                code = exc.status
                raise
            finally:
                metrics.in_flight.dec()
                metrics.requests.labels(name, version if name == server.name else "-", endpoint, str(code)).inc()
                metrics.latency.labels(name, endpoint).observe(time.perf_counter() - started)

        return metered


class ServedRoute(APIRoute):
    """A route of the table: anything unexpected it raises is a 500 naming an error id; ``meter`` counts it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, meter: Meter | None = None, **options: Any) -> None:
        self.meter = meter
        super().__init__(path, endpoint, **options)

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        where = f"{' '.join(sorted(self.methods))} {self.path}"

        async def served(request: Request) -> Response:
            try:
                return await handle(request)
            except REFUSALS:
                raise
            except Exception:  # a bug of ours: a 500 with an id, never a traceback to the client
                raise InternalError.logged("internal server error", "server error %s answering %s", where) from None

        return served if self.meter is None else self.meter.around(served)


async def error_response(request: Request, exc: Exception) -> Response:
    """The one exception handler: a refusal — ours, or FastAPI's 404, 405 and 422 — as ``{"error": message}``."""
    if isinstance(exc, RequestError):
        status, message, headers = exc.status, exc.message, exc.headers
    elif isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        status, message, headers = 422, f"{where}: {first.get('msg', 'invalid request')}", None  # never the input
    else:
        assert isinstance(exc, StarletteHTTPException)
        status, message, headers = exc.status_code, str(exc.detail), None
    return render(Reply({"error": message}, status, headers))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    server: Server = app.state.server
    server.start()
    yield
    server.close()  # SIGTERM lands here after in-flight requests finished: the scoring log is drained


def create_app(settings: ServeSettings) -> FastAPI:
    """Load the model (errors surface here, before the port opens) and build the app around it."""
    auth = BearerAuth(settings)
    server = Server(settings)
    endpoints = Endpoints(DataPlane(server), settings.max_body_bytes)
    routes = [
        ServedRoute(
            route.path,
            getattr(endpoints, route.endpoint),
            methods=[route.method],
            tags=[route.tag],
            dependencies=auth.dependencies(route.access),
            openapi_extra=request_body(route.body, route.csv) if route.body else None,
            meter=Meter(server, route.meter) if route.meter else None,
        )
        for route in ROUTES
    ]
    app = FastAPI(
        title="perftune inference server",
        version=__version__,
        description="Open Inference Protocol v2 and MLflow /invocations for a perftune-registered model.",
        routes=routes,
        lifespan=lifespan,
        exception_handlers=dict.fromkeys(REFUSALS, error_response),
    )
    app.state.server = server

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_schema(app, DOCUMENTED_BODIES)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn's factory for ``--workers`` processes: settings come from the parent as JSON."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{SETTINGS_ENV} is not set; start the server with `perftune serve`")
    return create_app(ServeSettings.model_validate_json(raw))
