"""``modelfusion serve``: a bundle over HTTP with dynamic batching, on uvicorn or Ray Serve replicas."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from modelfusion.cli.console import TRUST_HELP, console, handle_errors, log
from modelfusion.errors import ParameterError

if TYPE_CHECKING:
    from modelfusion.serving.app import ServeSettings


@handle_errors
def serve(
    bundle: Path = typer.Argument(..., help="A fused bundle folder (from `modelfusion run`)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most rows in one model call."),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", help="Longest a request waits for others to join its batch."
    ),
    max_queue: int = typer.Option(
        4096, "--max-queue", help="Most rows queued; beyond it requests get 503 + Retry-After."
    ),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Largest request body (413 beyond it)."),
    workers: int = typer.Option(
        1, "--workers", "-w", help="uvicorn worker processes (each loads the bundle)."
    ),
    engine: str = typer.Option(
        "auto", "--engine", help="auto (the fused ONNX graph where it matches), onnx, torch, members."
    ),
    allow_nan: bool = typer.Option(
        False, "--allow-nan", help="Let NaN / null reach the model (members that handle missing values)."
    ),
    threads: int = typer.Option(
        None, "--threads", help="ONNX Runtime threads per call (default: one per core)."
    ),
    ray: bool = typer.Option(False, "--ray", help="Serve on Ray Serve (extra 'ray') instead of one uvicorn."),
    replicas: int = typer.Option(
        1, "--replicas", help="With --ray: replicas, each with its own model and batcher."
    ),
    ray_address: str = typer.Option(
        None, "--ray-address", help="With --ray: a cluster (ray://head:10001, auto); default a local Ray."
    ),
    trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
) -> None:
    """Serve BUNDLE: POST /predict (dynamic batching), GET /health, /metadata, /metrics, /docs."""
    from modelfusion.serving.app import ServeSettings

    settings = ServeSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        engine=engine,
        allow_nan=allow_nan,
        trust=trust,
        threads=threads,
    )
    check_options(settings, port=port, workers=workers, replicas=replicas, ray=ray)
    if ray:
        serve_ray(bundle, settings, host=host, port=port, replicas=replicas, address=ray_address)
    else:
        serve_uvicorn(bundle, settings, host=host, port=port, workers=workers)


def check_options(settings: ServeSettings, *, port: int, workers: int, replicas: int, ray: bool) -> None:
    """ParameterError naming the first option out of range (before anything loads)."""
    from modelfusion.runtime.engine import ENGINES

    if settings.engine not in ENGINES:
        raise ParameterError(f"--engine must be one of {', '.join(ENGINES)}, got {settings.engine!r}")
    for flag, value, low in (
        ("--max-batch", settings.max_batch, 1),
        ("--max-queue", settings.max_queue, settings.max_batch),
        ("--max-body-mb", settings.max_body_bytes, 1),
        ("--workers", workers, 1),
        ("--replicas", replicas, 1),
        ("--port", port, 0),
        ("--threads", settings.threads or 1, 1),
    ):
        if value < low:
            raise ParameterError(f"{flag} must be >= {low}, got {value}")
    if settings.max_wait_ms < 0:
        raise ParameterError(f"--max-wait-ms must be >= 0, got {settings.max_wait_ms}")
    if port > 65535:
        raise ParameterError(f"--port must be <= 65535, got {port}")
    if ray and workers != 1:
        raise ParameterError("--workers is for uvicorn; with --ray use --replicas")


def serve_uvicorn(bundle: Path, settings: ServeSettings, *, host: str, port: int, workers: int) -> None:
    """Verify the bundle, then run uvicorn (one process, or ``workers`` that each build the app)."""
    from modelfusion.dependencies import require
    from modelfusion.serving.app import SETTINGS_ENV, create_app, settings_environment
    from modelfusion.serving.metrics import MULTIPROCESS_ENV

    uvicorn = require("uvicorn", purpose="modelfusion serve", extra="serve")
    app = create_app(bundle, settings)  # loads and verifies: a damaged bundle stops here, exit 2
    served = app.state.served
    log(
        f"serving {bundle} ({len(served.model.members)} members, sha256 {served.digest[:12]}) on http://{host}:{port}"
    )
    log(
        f"  max batch {settings.max_batch} rows, max wait {settings.max_wait_ms:g} ms; docs at /docs, metrics at /metrics"
    )
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
        return
    del app
    os.environ[SETTINGS_ENV] = settings_environment(bundle.resolve(), settings)
    with tempfile.TemporaryDirectory(prefix="modelfusion-metrics-") as shared:
        os.environ.setdefault(MULTIPROCESS_ENV, shared)  # the workers' metrics, summed at every scrape
        uvicorn.run(
            "modelfusion.serving.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            timeout_graceful_shutdown=30,
        )


def serve_ray(
    bundle: Path, settings: ServeSettings, *, host: str, port: int, replicas: int, address: str | None
) -> None:
    """Deploy on Ray Serve and block until Ctrl-C, then stop Serve (and the local Ray)."""
    import time

    from modelfusion.serving.model import ServedModel
    from modelfusion.serving.ray_app import serve_on_ray, stop_ray_serving

    ServedModel(
        bundle, trust=settings.trust, engine=settings.engine
    )  # verify first: exit 2, not a replica crash
    try:  # Ctrl-C may come while serve.run still waits, after the replicas already answer
        serve_on_ray(bundle, settings, replicas=replicas, host=host, port=port, address=address)
        console.print(
            f"serving {bundle} on Ray Serve: {replicas} replica(s) at http://{host}:{port}; Ctrl-C stops"
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # Ctrl-C: a normal stop for a server (SIGTERM goes to Ray's own handler)
        log("stopping the Ray Serve deployment")
    finally:
        stop_ray_serving(shutdown_ray=address is None)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(serve)
