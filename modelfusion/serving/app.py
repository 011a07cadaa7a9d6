"""The HTTP app: ``POST /predict`` through the micro-batcher, ``/health``, ``/metadata``, ``/metrics``.

:func:`create_app` loads and verifies the bundle before it returns (a damaged bundle never
starts a server); warm-up (the engine chosen and run once) is part of the app's start-up, which
uvicorn and Ray finish before they route requests; ``/health`` and ``/predict`` answer 503 to a
host that routes sooner. Every error is a JSON body ``{"error": ..., "status": ...}``: 400 malformed body, 413 too
large, 415 unknown content type, 422 rows the model cannot take, 503 queue full (with
``Retry-After``) or shutting down; a failing request never stops the others. The app returned
is a :class:`~modelfusion.serving.predict_path.ServingApp`: ``POST /predict`` goes straight to
the batching handler, the rest (and the OpenAPI schema) to FastAPI (``app.fastapi``).

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations as objects.
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelfusion.dependencies import require
from modelfusion.serving.batcher import MicroBatcher
from modelfusion.serving.metrics import ServerMetrics
from modelfusion.serving.model import ServedModel
from modelfusion.serving.openapi import ERROR_RESPONSES, PREDICT_BODY, PREDICT_PARAMETERS, response_models
from modelfusion.serving.payload import PayloadError
from modelfusion.serving.predict_path import PredictEndpoint, ServingApp, error_body

#: The environment variable that carries :class:`ServeSettings` to uvicorn's worker processes.
SETTINGS_ENV = "MODELFUSION_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    """How a server batches and what it accepts.

    ``max_batch`` rows per model call, gathered for at most ``max_wait_ms``; ``max_queue`` rows
    (and ``max_queue_bytes``) waiting before requests get 503 with ``Retry-After: retry_after_s``;
    ``max_body_bytes`` per request (413 beyond); ``engine`` as ``FusedModel.predict``'s;
    ``allow_nan`` lets NaN/null reach the model; ``trust`` as ``FusedModel.load``'s; ``threads``:
    ONNX Runtime intra-op threads (default one per core).

    Examples
    --------
    >>> ServeSettings(max_batch=64, max_wait_ms=5).max_queue
    4096
    """

    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 4096
    max_body_bytes: int = 16 * 1024 * 1024
    engine: str = "auto"
    allow_nan: bool = False
    trust: bool = False
    retry_after_s: int = 1
    threads: int | None = None
    max_queue_bytes: int = 256 * 1024 * 1024


def create_app(
    bundle: str | Path, settings: ServeSettings | None = None, *, served: ServedModel | None = None
) -> ServingApp:
    """The ASGI app serving ``bundle`` (loaded and verified now; warmed up when the app starts).

    Examples
    --------
    >>> app = create_app("runs/demo/results/bundle", ServeSettings(max_batch=64, max_wait_ms=5))
    >>> import uvicorn; uvicorn.run(app, port=8000)
    """
    fastapi = require("fastapi", purpose="modelfusion serve", extra="serve")
    require("prometheus_client", purpose="the server's /metrics", extra="serve")
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response

    from modelfusion.version import __version__

    settings = settings or ServeSettings()
    served = served or ServedModel(
        bundle,
        trust=settings.trust,
        engine=settings.engine,
        allow_nan=settings.allow_nan,
        threads=settings.threads,
    )
    metrics = ServerMetrics()
    batcher = MicroBatcher(
        served,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        max_queue_bytes=settings.max_queue_bytes,
        on_batch=metrics.observe_batch,
    )
    metrics.track_queue(lambda: batcher.queued_rows)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await batcher.start()
        await asyncio.get_running_loop().run_in_executor(None, served.warm_up)
        yield
        await batcher.close()  # uvicorn stopped accepting; finish what is queued

    models = response_models()
    app = fastapi.FastAPI(
        title="modelfusion",
        version=__version__,
        description=f"A fused model ({type(served.model.strategy).__name__} over "
        f"{len(served.model.members)} members) with dynamic batching.",
        lifespan=lifespan,
    )
    app.state.served, app.state.batcher, app.state.metrics = served, batcher, metrics
    handler = PredictEndpoint(
        served, batcher, max_body_bytes=settings.max_body_bytes, retry_after_s=settings.retry_after_s
    )

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        status, body = error_body(status, message)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Any, exc: Exception) -> Any:  # the model failed: this request only
        return error(500, f"the model failed on this request: {type(exc).__name__}: {exc}")

    @app.post(
        "/predict",
        response_model=models["predict"],
        responses=ERROR_RESPONSES,
        openapi_extra={"requestBody": PREDICT_BODY, "parameters": PREDICT_PARAMETERS},
        summary="Fused predictions for rows, records, a .npy array, an image or texts",
    )
    async def predict(request: Request) -> Any:  # what mounting app.fastapi alone serves; ServingApp skips it
        try:
            body = await handler.read_body(
                request.headers.get("content-length", "").encode() or None, request.receive
            )
        except PayloadError as exc:
            return error(exc.status, str(exc))
        status, payload, headers = await handler.answer(
            body, request.headers.get("content-type"), request.scope["query_string"]
        )
        return JSONResponse(payload, status_code=status, headers=headers)

    @app.get(
        "/health", response_model=models["health"], responses={503: ERROR_RESPONSES[503]}, summary="Readiness"
    )
    async def health() -> Any:
        body: dict[str, Any] = {
            "status": "ok" if served.ready else "warming up",
            "live": True,
            "ready": served.ready,
        }
        body.update(engine=served.engine, queued_rows=batcher.queued_rows)
        return JSONResponse(body, status_code=200 if served.ready else 503)

    @app.get("/health/live", response_model=models["health"], summary="Liveness")
    async def live() -> Any:
        return JSONResponse({"status": "ok", "live": True, "ready": served.ready})

    @app.get(
        "/metadata", response_model=models["metadata"], summary="Members, classes, input schema, checksum"
    )
    async def metadata() -> Any:
        return JSONResponse(served.metadata())

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Any:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    return ServingApp(app, handler, metrics)


def app_from_environment() -> Any:
    """The app uvicorn's worker processes build (``--workers N``): bundle and settings from
    ``$MODELFUSION_SERVE_SETTINGS`` (JSON written by ``modelfusion serve``)."""
    raw = json.loads(os.environ[SETTINGS_ENV])
    bundle = raw.pop("bundle")
    return create_app(bundle, ServeSettings(**raw))


def settings_environment(bundle: str | Path, settings: ServeSettings) -> str:
    """The JSON :func:`app_from_environment` reads.

    Examples
    --------
    >>> os.environ[SETTINGS_ENV] = settings_environment("runs/demo/results/bundle", ServeSettings())
    >>> app = app_from_environment()  # what each uvicorn worker process runs
    """
    return json.dumps({"bundle": str(bundle), **asdict(settings)})


__all__ = ["SETTINGS_ENV", "ServeSettings", "app_from_environment", "create_app", "settings_environment"]
