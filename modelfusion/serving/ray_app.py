"""The same app on Ray Serve: ``K`` replicas, each with its own model and micro-batcher.

Each replica builds the app itself (Ray calls :func:`create_app` on the replica, so the bundle is
loaded and verified there and nothing heavy is pickled); Ray's proxy spreads requests over the
replicas. On this machine ``ray.init()`` starts a local Ray; on a cluster pass its address
(``ray://head:10001``, or ``auto`` on a cluster node) and every node needs the bundle path.

Examples
--------
>>> handle = serve_on_ray("runs/demo/results/bundle", ServeSettings(), replicas=2, port=8000)
>>> # curl -X POST localhost:8000/predict -H 'Content-Type: application/json' -d '[[0, ...]]'
>>> stop_ray_serving()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelfusion.dependencies import require
from modelfusion.errors import ParameterError
from modelfusion.serving.app import ServeSettings, create_app

APP_NAME = "modelfusion"


def ray_deployment(
    bundle: str | Path, settings: ServeSettings, *, replicas: int = 1, cpus: float = 1.0
) -> Any:
    """The Ray Serve application (bound deployment) serving ``bundle`` with ``replicas`` replicas.

    Examples
    --------
    >>> serve.run(ray_deployment("runs/demo/results/bundle", ServeSettings(), replicas=4), route_prefix="/")
    """
    if replicas < 1:
        raise ParameterError(f"--replicas must be >= 1, got {replicas}")
    require("ray", purpose="modelfusion serve --ray", extra="ray")
    from ray import serve

    path = str(Path(bundle).resolve())

    def build() -> Any:  # runs on each replica
        return create_app(path, settings)

    ingress = serve.ingress(build)

    class FusedModelDeployment:
        """One replica: the whole FastAPI app of :func:`create_app`."""

    deployment: Any = serve.deployment(
        ingress(FusedModelDeployment),
        name="FusedModel",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus},
        max_ongoing_requests=max(settings.max_queue, 1),
    )
    return deployment.bind()


def serve_on_ray(
    bundle: str | Path,
    settings: ServeSettings,
    *,
    replicas: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    cpus: float = 1.0,
) -> Any:
    """Start (or join, with ``address``) Ray, deploy ``bundle`` and return its handle once every
    replica is up; HTTP on ``host:port`` through Ray's proxy."""
    ray = require("ray", purpose="modelfusion serve --ray", extra="ray")
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    return serve.run(
        ray_deployment(bundle, settings, replicas=replicas, cpus=cpus), name=APP_NAME, route_prefix="/"
    )


def stop_ray_serving(*, shutdown_ray: bool = True) -> None:
    """Remove the deployment, stop Serve and (by default) the local Ray."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    serve.shutdown()
    if shutdown_ray:
        ray.shutdown()


__all__ = ["APP_NAME", "ray_deployment", "serve_on_ray", "stop_ray_serving"]
