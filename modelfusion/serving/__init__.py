"""Serving a fused bundle over HTTP: the FastAPI app, the micro-batcher, Ray Serve replicas.

Examples
--------
>>> from modelfusion.serving import ServeSettings, create_app
>>> app = create_app("runs/demo/results/bundle", ServeSettings(max_batch=64, max_wait_ms=5))
"""

from modelfusion.lazy import lazy_attributes

_LAZY = {
    "MicroBatcher": "modelfusion.serving.batcher",
    "QueueFullError": "modelfusion.serving.batcher",
    "ServeSettings": "modelfusion.serving.app",
    "ServedModel": "modelfusion.serving.model",
    "ServingApp": "modelfusion.serving.predict_path",
    "InputSchema": "modelfusion.serving.payload",
    "PayloadError": "modelfusion.serving.payload",
    "create_app": "modelfusion.serving.app",
    "parse_payload": "modelfusion.serving.payload",
    "serve_on_ray": "modelfusion.serving.ray_app",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
