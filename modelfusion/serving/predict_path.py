"""``POST /predict`` as a plain ASGI handler: the one implementation of the endpoint.

FastAPI's per-request machinery (dependency solving, query-parameter models, four middleware
layers) cost more CPU than a batched model call: profiled under 32 clients on the demo bundle,
the event loop spent 51% of its samples in the framework around the endpoint and 16% in it. The
server's front door (:class:`ServingApp`) hands ``POST /predict`` straight to
:class:`PredictEndpoint`; every other path, and the OpenAPI schema (whose ``/predict`` route calls
the same :meth:`PredictEndpoint.answer`), stays with FastAPI.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl

from modelfusion.serving.batcher import MicroBatcher, QueueFullError, ShuttingDownError
from modelfusion.serving.metrics import ServerMetrics
from modelfusion.serving.model import ServedModel
from modelfusion.serving.payload import PayloadError, parse_payload

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_KNOWN_PATHS = ("/predict", "/health", "/health/live", "/metadata", "/metrics")


class PredictEndpoint:
    """Parses a body, waits for its batch, answers JSON; every failure is a JSON error.

    Examples
    --------
    >>> status, body, headers = await PredictEndpoint(served, batcher, max_body_bytes=1 << 20, retry_after_s=1).answer(
    ...     b"[[0, 1]]", "application/json", b"proba=true")
    """

    def __init__(
        self, served: ServedModel, batcher: MicroBatcher, *, max_body_bytes: int, retry_after_s: int
    ):
        self.served, self.batcher = served, batcher
        self.max_body_bytes, self.retry = max_body_bytes, {"Retry-After": str(retry_after_s)}

    async def answer(
        self, body: bytes, content_type: str | None, query: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """``(status, JSON body, extra headers)`` for one request."""
        try:
            proba = _proba(query)
            rows = parse_payload(body, content_type, self.served.schema)
            if not self.served.ready:
                return (*error_body(503, "the model is warming up; retry shortly"), self.retry)
            scores = await self.batcher.submit(rows, nbytes=max(len(body), rows.nbytes))
            return 200, self.served.answer(scores, proba=proba), {}
        except PayloadError as exc:
            return (*error_body(exc.status, str(exc)), {})
        except (QueueFullError, ShuttingDownError) as exc:
            return (*error_body(503, str(exc)), self.retry)
        except Exception as exc:  # the model failed on this batch: this request answers 500, others go on
            return (*error_body(500, f"the model failed on this request: {type(exc).__name__}: {exc}"), {})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)  # a repeated header: the first counts, as in Starlette
        content_type = headers.get(b"content-type", b"").decode("latin-1") or None
        extra: dict[str, str] = {}
        try:
            body = await self.read_body(headers.get(b"content-length"), receive)
        except PayloadError as exc:
            status, payload = error_body(exc.status, str(exc))
        else:
            status, payload, extra = await self.answer(body, content_type, scope.get("query_string", b""))
        await _respond(send, status, payload, extra)

    async def read_body(self, declared: bytes | None, receive: Any) -> bytes:
        """The request body from ASGI ``receive``; 413 beyond the limit (declared or streamed)."""
        limit = self.max_body_bytes
        if declared is not None:
            if not declared.isdigit():
                raise PayloadError(
                    f"Content-Length {declared.decode('latin-1')!r} is not a number", status=400
                )
            if int(declared) > limit:
                raise PayloadError(f"the body has {int(declared)} bytes; the limit is {limit}", status=413)
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise PayloadError("the client went away", status=400)
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise PayloadError(f"the body is over the limit of {limit} bytes", status=413)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


class ServingApp:
    """The server's ASGI app: ``POST /predict`` to :class:`PredictEndpoint`, the rest to FastAPI;
    every answered request counted in the metrics with its status and latency.

    ``fastapi`` is the FastAPI app (``/health``, ``/metadata``, ``/metrics``, ``/openapi.json``,
    ``/docs``, the lifespan); ``state`` its state (``served``, ``batcher``, ``metrics``).

    Examples
    --------
    >>> app = create_app("runs/demo/results/bundle")
    >>> app.fastapi.openapi()["paths"].keys()
    dict_keys(['/predict', '/health', '/health/live', '/metadata', '/metrics'])
    """

    def __init__(self, fastapi_app: Any, predict: PredictEndpoint, metrics: ServerMetrics):
        self.fastapi, self.predict, self.metrics = fastapi_app, predict, metrics

    @property
    def state(self) -> Any:
        return self.fastapi.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.fastapi(scope, receive, send)  # lifespan: warm-up, then the drain at shutdown
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # behind --root-path the scope's path carries the prefix
            path = path[len(root) :] or "/"
        try:
            if path == "/predict" and scope["method"] == "POST":
                await self.predict(scope, receive, send_status)
            else:
                await self.fastapi(scope, receive, send_status)
        finally:
            self.metrics.observe_request(
                path if path in _KNOWN_PATHS else "other", status, time.perf_counter() - start
            )


def _proba(query: bytes) -> bool:
    value = dict(parse_qsl(query.decode("latin-1"))).get("proba", "false").lower()
    if value not in _TRUE + _FALSE:
        raise PayloadError(f"query.proba: expected true or false, got {value!r}")
    return value in _TRUE


def error_body(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """``(status, {"error": message, "status": status})``: the body of every 4xx/5xx answer.

    Examples
    --------
    >>> error_body(415, "Content-Type 'text/xml' is not supported")
    (415, {'error': "Content-Type 'text/xml' is not supported", 'status': 415})
    """
    return status, {"error": message, "status": status}


async def _respond(send: Any, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
    try:
        body = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()
    except (ValueError, TypeError) as exc:  # a value JSON cannot hold: still a JSON answer
        status, payload = error_body(500, f"the answer could not be written as JSON: {exc}")
        body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


__all__ = ["PredictEndpoint", "ServingApp", "error_body"]
