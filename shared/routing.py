"""Route helpers shared by the services: raw JSON bodies documented in OpenAPI, the
common app setup (errors, secret, health).

Hot routes read the body with orjson instead of a pydantic model (a model per event costs
about 20%), yet their request shape still appears in the OpenAPI document via
`body_doc(Model)`.

Invariants: `read_json` never raises anything but 400 M_NOT_JSON / M_BAD_JSON for a bad
body (empty, not UTF-8, NaN, nesting too deep, 5000-digit numbers, lone surrogates...) and
keeps every integer exact; `BodyLimitMiddleware` answers 413 M_TOO_LARGE before any parsing.
"""
from __future__ import annotations

import inspect
import types
import typing
from time import perf_counter

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError, create_model
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response
from starlette.routing import Match, Route

from shared.api_doc import document_matrix_errors
from shared.canonical import BadJSON, dumps, parse_json_body
from shared.errors import MatrixError, install_error_handlers
from shared.internal import InternalSecretMiddleware
from shared.logs import accept_request_id, request_id
from shared.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE


class _AnyText(Convertor):
    """`{name:text}`: the rest of the path, any characters, newlines too (Starlette's
    `path` pattern stops at a newline, so a txnId holding one was answered 404)."""
    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value) -> str:
        return str(value)


register_url_convertor("text", _AnyText())     # a pattern type, the same for every app


def _inline_refs(schema: dict) -> dict:
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(dict(defs[node["$ref"].split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    return walk(schema)


def body_doc(model) -> dict:
    """`openapi_extra` documenting a JSON request body of shape `model`."""
    schema = _inline_refs(model.model_json_schema())
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


async def read_json(request: Request, *, require_object: bool = True):
    """Parse a JSON request body; 400 M_NOT_JSON / M_BAD_JSON instead of any exception.

    Strict and exact (`shared.canonical.parse_json_body`): integers keep every digit (orjson
    alone would turn those beyond 64 bits into floats, so a signature over the body could
    not be checked and canonical-JSON checks would see the wrong value); an empty body is
    not JSON."""
    raw = await request.body()
    if not raw:
        if require_object:
            raise MatrixError(400, "M_NOT_JSON", "request body is empty")
        return None
    try:
        data = parse_json_body(raw)
    except BadJSON as exc:
        raise MatrixError(400, exc.errcode, exc.message)
    if require_object and not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", "request body must be a JSON object")
    return data


# FastAPI >= 0.16x traces, counts and logs every request through OpenTelemetry unless told
# not to; asking whether a provider is configured alone costs ~16 us per request on these
# machines. Our own metrics and request ids (shared.metrics, shared.logs) do that job.
_NO_TELEMETRY = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
                 if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


def new_app(title: str, secret: str | None, version: str = "0.1.0", *, metrics=None,
            metrics_route: bool = True, **kwargs) -> FastAPI:
    """A FastAPI app with Matrix errors, `/health`, and the internal-secret guard; with
    `metrics` (a `shared.metrics.Metrics`), every request is timed per route template and,
    unless `metrics_route` is False, `GET /metrics` serves them (Prometheus text).
    FastAPI's own OpenTelemetry instrumentation is off (see _NO_TELEMETRY). Its OpenAPI
    document lists the Matrix errors it really answers, never FastAPI's 422
    (`shared.api_doc`)."""
    app = FastAPI(title=title, version=version, **{**_NO_TELEMETRY, **kwargs})
    app.router.redirect_slashes = False     # an unknown path is 404, never a redirect
    install_error_handlers(app)
    document_matrix_errors(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict:
        return {"status": "ok", "service": title}

    app.state.metrics = metrics
    if metrics is not None and metrics_route:
        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(await metrics.render(), media_type=METRICS_CONTENT_TYPE)

    if secret is not None:
        app.add_middleware(InternalSecretMiddleware, secret=secret)
    return app


def serve_lean(app: FastAPI, *endpoints) -> None:
    """Serve the routes of `endpoints` (hot paths: a few per event) without FastAPI's
    per-request machinery, while the OpenAPI document still describes them as declared.

    Why: on these machines FastAPI's dependency solving, validation and serialisation cost
    ~50 us of CPU per request over a plain handler, and its middleware stack (error,
    telemetry, body-limit, exception and exit-stack layers, then the router's scan) ~20 us
    more (`python -m bench.hop`); an event crosses seven to nine of our routes.

    A lean request still passes the app's own middleware (internal secret, body limit) and
    its exception handlers answer its errors, exactly as for any other route.

    Invariant: an endpoint served lean takes only `request`, its path parameters (str),
    scalar query parameters, and at most one pydantic-model body, which is parsed by
    `read_json` (400 M_NOT_JSON / M_BAD_JSON); query and body are validated by pydantic
    against what was declared (errors answered by the app's RequestValidationError
    handler, as FastAPI would). It returns a Response, or a dict sent as JSON (only the
    response_model's fields, when it has one). Anything else is refused at app creation."""
    wanted = set(endpoints)
    lean_routes = [Route(r.path, _lean_handler(r), methods=list(r.methods), name=r.name)
                   for r in app.router.routes
                   if isinstance(r, APIRoute) and r.endpoint in wanted]
    missing = wanted - {r.endpoint for r in app.router.routes if isinstance(r, APIRoute)}
    if missing:
        raise ValueError(f"not routes of this app: {sorted(e.__name__ for e in missing)}")
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: _LeanFront(app, build_stack(), lean_routes)


class _LeanFront:
    """The app's outermost ASGI layer once `serve_lean` ran: a request matching a lean
    route (path and method) goes through the app's own middleware straight to its handler;
    everything else (a wrong method on a lean path included) goes through the full FastAPI
    stack, whose router still holds every route as declared (and documents it)."""

    def __init__(self, app: FastAPI, full_stack, routes: list[Route]):
        self.full_stack = full_stack
        self.routes = routes
        self.metrics = getattr(app.state, "metrics", None)
        self.timers = {} if self.metrics is None else {
            (r.path, m): self.metrics.route_timer(m, r.path) for r in routes for m in r.methods}
        self.handlers = dict(app.exception_handlers)
        lean = self._serve
        for cls, args, kwargs in reversed(app.user_middleware):
            lean = cls(lean, *args, **kwargs)
        self.lean = lean

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.full_stack(scope, receive, send)
        start = perf_counter()
        token = request_id.set(accept_request_id(scope))   # reset below: in-process
        try:                                                # callers share our context
            await self._dispatch(scope, receive, send, start)
        finally:
            request_id.reset(token)

    async def _dispatch(self, scope, receive, send, start):
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                scope["fedstack.lean_route"] = route
                try:
                    return await self.lean(scope, receive, send)
                finally:
                    timer = self.timers.get((route.path, scope["method"]))
                    if timer is not None:
                        timer.observe(perf_counter() - start)
        try:
            await self.full_stack(scope, receive, send)
        finally:
            if self.metrics is not None:   # the route the router matched (its template)
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.route_timer(scope["method"], route).observe(perf_counter() - start)

    async def _serve(self, scope, receive, send):
        request = Request(scope, receive)
        try:
            response = await scope["fedstack.lean_route"].endpoint(request)
        except Exception as exc:  # noqa: BLE001 - answered by the app's own handler
            handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers),
                           None)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _lean_handler(route: APIRoute):
    """The request handler `serve_lean` puts in place of FastAPI's for `route`."""
    endpoint, dep = route.endpoint, route.dependant
    extra = (dep.header_params or dep.cookie_params or dep.dependencies
             or len(dep.body_params) > 1 or dep.response_param_name
             or dep.background_tasks_param_name
             or any(_is_sequence(q.field_info.annotation) for q in dep.query_params))
    body = dep.body_params[0] if dep.body_params else None
    if extra or (body is not None and not (isinstance(body.field_info.annotation, type) and
                                           issubclass(body.field_info.annotation, BaseModel))):
        raise ValueError(f"{route.path}: only request, path and scalar query parameters "
                         "and one model body can be served lean")
    body_name, body_model = (body.name, body.field_info.annotation) if body else (None, None)
    request_name = dep.request_param_name
    query_model = None
    if dep.query_params:     # scalar query parameters, validated as FastAPI declared them
        query_model = create_model(f"{route.name}_query", **{
            q.name: (q.field_info.annotation, q.field_info) for q in dep.query_params})
    path_names = [p.name for p in dep.path_params]
    fields = None
    if isinstance(route.response_model, type) and issubclass(route.response_model, BaseModel):
        fields = set(route.response_model.model_fields)

    async def handle(request: Request) -> Response:
        kwargs = {name: request.path_params[name] for name in path_names}
        if request_name:
            kwargs[request_name] = request
        if query_model is not None:
            try:
                kwargs.update(query_model.model_validate(dict(request.query_params)))
            except ValidationError as exc:
                raise RequestValidationError(
                    [dict(e, loc=("query", *e["loc"])) for e in exc.errors(include_url=False)])
        if body_name is not None:
            data = await read_json(request)
            try:
                kwargs[body_name] = body_model.model_validate(data)
            except ValidationError as exc:
                raise RequestValidationError(
                    [dict(e, loc=("body", *e["loc"])) for e in exc.errors(include_url=False)])
        result = await endpoint(**kwargs)
        if isinstance(result, Response):
            return result
        if fields is not None and isinstance(result, dict):
            result = {k: v for k, v in result.items() if k in fields}
        return Response(dumps(result), media_type="application/json")
    return handle


def _is_sequence(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation))
    return origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset)


class BodyLimitMiddleware:
    """Pure ASGI middleware: request bodies over `max_bytes` get 413 M_TOO_LARGE before
    any handler parses them (declared Content-Length or counted while reading)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send):
        body = orjson.dumps({"errcode": "M_TOO_LARGE", "error": "Request body too large"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    return await self._too_large(send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(send)
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)


class JsonBodyMiddleware:
    """Pure ASGI middleware: a request body is JSON whatever its Content-Type says, as
    Matrix servers take it (`curl -d` sends application/x-www-form-urlencoded, which
    FastAPI would otherwise parse as a form): the header is set to application/json."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        await self.app(scope, receive, send)
