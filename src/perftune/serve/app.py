"""The inference server: FastAPI on uvicorn, serving one registered model and following its alias.

The hot path reads the raw body, parses it with orjson, validates it against the signature
(:mod:`perftune.serve.protocol`) and calls the scikit-learn model on a float matrix; pydantic models describe
the bodies in ``/openapi.json`` without sitting on that path.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from perftune import __version__
from perftune.errors import PerftuneError, UsageError
from perftune.registry.catalog import ModelRegistry
from perftune.serve import protocol
from perftune.serve.feedback import RULE as FEEDBACK_RULE
from perftune.serve.feedback import LabelCountError, attach_labels
from perftune.serve.metrics import ServerMetrics
from perftune.serve.model import LoadedModel, load_version
from perftune.serve.protocol import RequestError
from perftune.serve.scoring_writer import ScoringLog
from perftune.serve.settings import SETTINGS_ENV, ServeSettings

log = logging.getLogger("perftune.serve")

INLINE_ROWS = 256  # larger batches predict in a worker thread so the event loop keeps answering


# --------------------------------------------------------------------------------------- documented bodies


class Tensor(BaseModel):
    name: str = Field(examples=["input-0"])
    shape: list[int] = Field(examples=[[1, 8]])
    datatype: str = Field(examples=["FP64"], description="BOOL, UINT8…64, INT8…64, FP16, FP32, FP64 or BYTES")
    data: list[Any] = Field(description="row-major values, flat or nested")
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor]
    outputs: list[dict[str, Any]] | None = None


class DataFrameSplit(BaseModel):
    columns: list[str] | None = None
    data: list[list[Any]]
    index: list[Any] | None = None


class InvocationsRequest(BaseModel):
    """Exactly one of the four formats."""

    dataframe_split: DataFrameSplit | None = None
    dataframe_records: list[dict[str, Any]] | None = None
    instances: list[Any] | None = None
    inputs: list[Any] | dict[str, list[Any]] | None = None
    params: dict[str, Any] | None = None


class FeedbackItem(BaseModel):
    request_id: str
    labels: list[Any] | Any = Field(description="the true label of each row of that request")


class FeedbackRequest(BaseModel):
    items: list[FeedbackItem]


class LoadRequest(BaseModel):
    reference: str | None = Field(default=None, description="NAME@ALIAS or NAME/VERSION; default: the served one")


_DOC_SCHEMAS: dict[str, Any] = {}


def _body(model: type[BaseModel], csv: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _DOC_SCHEMAS.update(schema.pop("$defs", {}))
    _DOC_SCHEMAS[model.__name__] = schema
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    return {"requestBody": {"required": True, "content": content}}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type="application/json"
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


# --------------------------------------------------------------------------------------------- the server


class Server:
    """One worker's state: the model it serves now, the alias follower, the scoring log, the metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.token = settings.token()
        self.metrics = ServerMetrics()
        self.registry = ModelRegistry(settings.tracking_uri)
        self.model: LoadedModel | None = self._load(settings.reference)
        self.name = self.model.name
        self.scoring = (
            ScoringLog(
                settings.scoring_uri,
                settings.scoring_spool(),
                settings.scoring_durability,
                on_failure=self.metrics.scoring_failures.inc,
            )
            if settings.scoring_uri
            else None
        )
        self.following = "@" in settings.reference
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="perftune-alias-follower", daemon=True)

    def _load(self, reference: str) -> LoadedModel:
        model = load_version(self.registry, reference)
        self.metrics.load_seconds.labels(model.name, model.version).set(model.load_seconds)
        self.metrics.loaded.labels(model.name, model.version).set(1)
        log.info("loaded %s v%s in %.3f s", model.name, model.version, model.load_seconds)
        return model

    def swap(self, model: LoadedModel | None) -> None:
        """Switch atomically: a request holds the model it started with, the next one gets the new one."""
        before, self.model = self.model, model
        if before is not None and (model is None or model.version != before.version):
            self.metrics.loaded.labels(before.name, before.version).set(0)
            self.metrics.swaps.labels(self.name).inc()
            log.info("%s: v%s → %s", self.name, before.version, f"v{model.version}" if model else "unloaded")

    def start(self) -> None:
        if self.following and self.settings.poll_interval_s > 0:
            self._follower.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                self.refresh()
            except Exception as exc:  # keep serving what we have; say why the alias could not be followed
                log.warning("following %s failed: %s", self.settings.reference, exc)

    def refresh(self) -> bool:
        """Load the version the alias points at now, if it changed. Returns whether it swapped."""
        target = self.registry.resolve(self.settings.reference)
        current = self.model
        if current is not None and str(target.version) == current.version:
            return False
        self.swap(self._load(f"{self.name}/{target.version}"))
        return True

    def close(self) -> None:
        self._stop.set()
        if self._follower.is_alive():
            self._follower.join(timeout=10)
        if self.scoring is not None:
            self.scoring.close()
        self.registry.close()

    # ----------------------------------------------------------------------------------- request helpers

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    async def body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"payload of {int(declared)} bytes is over the limit of {limit} (--max-body-mb)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"payload is over the limit of {limit} bytes (--max-body-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self, request: Request, empty: Any = None) -> Any:
        """The body as JSON; an empty body is a 400 unless ``empty`` gives its meaning."""
        raw = await self.body(request)
        if not raw:
            if empty is not None:
                return empty
            raise RequestError(400, "empty body; send a JSON document")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, protocol.json_error(exc)) from None


def create_app(settings: ServeSettings) -> FastAPI:
    """Load the model (errors surface here, before the port opens) and build the app around it."""
    server = Server(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start()
        yield
        server.close()  # SIGTERM lands here after in-flight requests finished: the scoring log is drained

    app = FastAPI(
        title="perftune inference server",
        version=__version__,
        description="Open Inference Protocol v2 and MLflow /invocations for a perftune-registered model.",
        lifespan=lifespan,
    )
    app.state.server = server
    metrics = server.metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")  # never the input itself

    def denied() -> Response:
        return _error(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})

    def check_name(name: str, version: str | None, model: LoadedModel | None) -> LoadedModel:
        if name != server.name:
            raise RequestError(404, f"unknown model {name[:100]!r}; this server serves {server.name!r}")
        if model is None:
            raise RequestError(503, f"{server.name} is unloaded; POST /v2/repository/models/{server.name}/load")
        if version is not None and version != model.version:
            raise RequestError(404, f"{server.name} version {version[:20]!r} is not loaded; serving v{model.version}")
        return model

    async def predict(model: LoadedModel, X: Any) -> Any:
        if len(X) <= INLINE_ROWS:
            return model.predict(X)
        return await run_in_threadpool(model.predict, X)

    async def parse(request: Request, model: LoadedModel, endpoint: str) -> tuple[Any, str | None]:
        """The request's rows and the client's v2 id (None for /invocations)."""
        if endpoint == "invocations" and request.headers.get("content-type", "").startswith("text/csv"):
            return protocol.csv_request(await server.body(request), model.schema), None
        if endpoint == "invocations":
            return protocol.invocations_request(await server.json(request), model.schema), None
        return protocol.v2_request(await server.json(request), model.schema)

    def answered(model: LoadedModel, endpoint: str, X: Any, predictions: Any, client_id: str | None, started: float):
        """Build the response, then log it: only a response that exists is logged (and later counted as 200)."""
        key = uuid.uuid4().hex  # the server key: unique, whatever id the client sent
        headers = {"X-Request-Id": key, "X-Model-Version": model.version}
        if endpoint == "invocations":
            response = _json({"predictions": predictions}, headers=headers)
        else:
            response = _json(protocol.v2_response(model, predictions, client_id or key), headers=headers)
        if server.scoring is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            try:
                server.scoring.log(key, client_id, model.name, model.version, endpoint, X, predictions, latency_ms)
            except OSError as exc:  # durable mode: not written through, so not acknowledged
                log.error("cannot write the durable scoring log: %s", exc)
                raise RequestError(
                    503, f"cannot write the durable scoring log ({exc.strerror}); the request was not answered"
                ) from None
            metrics.queue_depth.set(server.scoring.depth())
        return response

    async def infer(request: Request, name: str, version: str | None, endpoint: str) -> Response:
        """One inference, whatever the protocol: validate, predict, build the response, log, count."""
        started = time.perf_counter()
        model = server.model  # the version that answers this request, even if a swap happens meanwhile
        shown = model.version if model else "-"
        metrics.in_flight.inc()
        code = 500
        try:
            if not server.authorized(request):
                code = 401
                return denied()
            model = check_name(name, version, model)
            X, client_id = await parse(request, model, endpoint)
            try:
                predictions = await predict(model, X)
            except Exception:
                error_id = uuid.uuid4().hex[:12]
                log.exception("model error %s in %s v%s", error_id, model.name, model.version)
                return _error(500, f"the model failed on this input; error id {error_id} is in the server log")
            response = answered(model, endpoint, X, predictions, client_id, started)
            metrics.rows.labels(model.name).observe(len(X))
            code = 200
            return response
        except RequestError as exc:
            code = exc.status
            return _error(exc.status, exc.message)
        except Exception:  # a bug of ours: a 500 with an id, never a traceback to the client nor a "200"
            error_id = uuid.uuid4().hex[:12]
            log.exception("server error %s answering %s", error_id, endpoint)
            return _error(500, f"internal server error; error id {error_id} is in the server log")
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(server.name, shown, endpoint, str(code)).inc()
            metrics.latency.labels(server.name, endpoint).observe(time.perf_counter() - started)

    # ------------------------------------------------------------------------------------------ health

    def open_or_denied(request: Request, protected: bool) -> Response | None:
        return denied() if protected and not server.authorized(request) else None

    @app.get("/v2/health/live", tags=["health"])
    async def live(request: Request) -> Response:
        return open_or_denied(request, settings.protect_health) or _json({"live": True})

    @app.get("/v2/health/ready", tags=["health"])
    async def ready(request: Request) -> Response:
        if refused := open_or_denied(request, settings.protect_health):
            return refused
        return _json({"ready": server.model is not None}, 200 if server.model is not None else 503)

    @app.get("/ping", tags=["health"])
    @app.get("/health", tags=["health"])
    async def ping(request: Request) -> Response:
        if refused := open_or_denied(request, settings.protect_health):
            return refused
        return Response("\n", 200 if server.model is not None else 503, media_type="application/json")

    @app.get("/v2", tags=["metadata"])
    async def server_metadata() -> Response:
        return _json({"name": "perftune", "version": __version__, "extensions": ["model_repository"]})

    # ------------------------------------------------------------------------------------- model metadata

    async def model_metadata(request: Request, name: str, version: str | None) -> Response:
        if not server.authorized(request):
            return denied()
        try:
            return _json(protocol.v2_metadata(check_name(name, version, server.model)))
        except RequestError as exc:
            return _error(exc.status, exc.message)

    async def model_ready(request: Request, name: str, version: str | None) -> Response:
        if not server.authorized(request):
            return denied()
        try:
            model = check_name(name, version, server.model)
        except RequestError as exc:
            if exc.status == 503:
                return _json({"name": name, "ready": False}, 503)
            return _error(exc.status, exc.message)
        return _json({"name": name, "version": model.version, "ready": True})

    @app.get("/v2/models/{name}", tags=["metadata"])
    async def metadata(request: Request, name: str) -> Response:
        return await model_metadata(request, name, None)

    @app.get("/v2/models/{name}/versions/{version}", tags=["metadata"])
    async def metadata_version(request: Request, name: str, version: str) -> Response:
        return await model_metadata(request, name, version)

    @app.get("/v2/models/{name}/ready", tags=["health"])
    async def is_ready(request: Request, name: str) -> Response:
        return await model_ready(request, name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["health"])
    async def is_ready_version(request: Request, name: str, version: str) -> Response:
        return await model_ready(request, name, version)

    # ------------------------------------------------------------------------------------------ inference

    @app.post("/v2/models/{name}/infer", tags=["inference"], openapi_extra=_body(InferRequest))
    async def infer_v2(request: Request, name: str) -> Response:
        return await infer(request, name, None, "v2")

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["inference"], openapi_extra=_body(InferRequest))
    async def infer_v2_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version, "v2")

    @app.post("/invocations", tags=["inference"], openapi_extra=_body(InvocationsRequest, csv=True))
    async def invocations(request: Request) -> Response:
        return await infer(request, server.name, None, "invocations")

    # ------------------------------------------------------------------------------------------- feedback

    @app.post("/v2/models/{name}/feedback", tags=["feedback"], openapi_extra=_body(FeedbackRequest))
    async def feedback(request: Request, name: str) -> Response:
        if not server.authorized(request):
            return denied()
        try:
            check_name(name, None, server.model)
            if server.scoring is None:
                raise RequestError(409, "this server keeps no scoring log (--no-scoring-log), so labels cannot join")
            payload = await server.json(request)
            items = payload.get("items") if isinstance(payload, dict) else None
            if not isinstance(items, list) or not items:
                raise RequestError(422, "send {'items': [{'request_id': ..., 'labels': [...]}, ...]}")
            pairs = []
            for i, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("request_id"), str) or "labels" not in item:
                    raise RequestError(422, f"items[{i}] needs a string 'request_id' and 'labels'")
                pairs.append((item["request_id"], item["labels"]))
            await run_in_threadpool(server.scoring.flush)  # labels may follow right after the answer
            result = await run_in_threadpool(attach_labels, server.scoring.engine, server.name, pairs)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except LabelCountError as exc:
            return _error(422, str(exc))
        body = {
            "stored": result.stored,
            "replaced": result.replaced,
            "unknown_request_ids": result.unknown[:100],
            "matched": result.matched[:100],
            "rule": FEEDBACK_RULE,
        }
        return _json(body, 200 if result.stored else 404)

    # ------------------------------------------------------------------------------------------- metrics

    @app.get("/metrics", tags=["metrics"])
    async def prometheus(request: Request) -> Response:
        if refused := open_or_denied(request, settings.protect_metrics):
            return refused
        if server.scoring is not None:
            metrics.queue_depth.set(server.scoring.depth())
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ----------------------------------------------------------------------------------------- management

    def manager(request: Request) -> Response | None:
        if server.token is None:
            return _error(403, "management endpoints need bearer-token auth; start the server with --token-file")
        return None if server.authorized(request) else denied()

    @app.post("/v2/repository/index", tags=["management"])
    async def repository_index(request: Request) -> Response:
        if refused := manager(request):
            return refused
        model = server.model
        state = "READY" if model else "UNAVAILABLE"
        return _json([{"name": server.name, "version": model.version if model else None, "state": state}])

    @app.post("/v2/repository/models/{name}/load", tags=["management"], openapi_extra=_body(LoadRequest))
    async def load(request: Request, name: str) -> Response:
        if refused := manager(request):
            return refused
        if name != server.name:
            return _error(404, f"unknown model {name[:100]!r}; this server serves {server.name!r}")
        try:
            payload = await server.json(request, empty={})
        except RequestError as exc:
            return _error(exc.status, exc.message)
        reference = payload.get("reference") if isinstance(payload, dict) else None
        if reference is not None and (not isinstance(reference, str) or not reference.startswith(server.name)):
            return _error(422, f"'reference' must name a version of {server.name} (NAME@ALIAS or NAME/VERSION)")
        try:
            model = await run_in_threadpool(server._load, reference or settings.reference)
        except PerftuneError as exc:
            return _error(404 if isinstance(exc, UsageError) else 500, str(exc))
        server.swap(model)
        return _json({"name": model.name, "version": model.version, "state": "READY"})

    @app.post("/v2/repository/models/{name}/unload", tags=["management"])
    async def unload(request: Request, name: str) -> Response:
        if refused := manager(request):
            return refused
        if name != server.name:
            return _error(404, f"unknown model {name[:100]!r}; this server serves {server.name!r}")
        server.swap(None)
        return _json({"name": name, "state": "UNAVAILABLE"})

    @app.post("/admin/reload", tags=["management"])
    async def reload(request: Request) -> Response:
        """Re-resolve the alias now instead of at the next poll."""
        if refused := manager(request):
            return refused
        try:
            swapped = await run_in_threadpool(server.refresh)
        except PerftuneError as exc:
            return _error(500, str(exc))
        model = server.model
        return _json({"name": server.name, "version": model.version if model else None, "swapped": swapped})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_DOC_SCHEMAS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn's factory for ``--workers`` processes: settings come from the parent as JSON."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{SETTINGS_ENV} is not set; start the server with `perftune serve`")
    return create_app(ServeSettings.model_validate_json(raw))
