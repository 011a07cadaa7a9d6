"""The same app on Ray Serve: a local Ray, two replicas, the fused model's own answers."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from modelfusion import FusedModel, manifest_digest
from modelfusion.errors import ParameterError
from modelfusion.serving.app import ServeSettings
from tests.serving.server import free_port, wait_until_ready

pytest.importorskip("fastapi")
pytest.importorskip("ray.serve")


def test_two_ray_replicas_serve_the_bundle(rows_bundle, digits_rows):
    from modelfusion.serving.ray_app import serve_on_ray, stop_ray_serving

    port = free_port()
    X = digits_rows[0][:6]
    try:
        serve_on_ray(rows_bundle, ServeSettings(max_wait_ms=2), replicas=2, port=port, cpus=0.5)
        base = f"http://127.0.0.1:{port}"
        request = urllib.request.Request(
            f"{base}/predict?proba=true",
            data=json.dumps(X.tolist()).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.load(urllib.request.urlopen(request, timeout=30))
        metadata = json.load(urllib.request.urlopen(f"{base}/metadata", timeout=30))
        health = json.load(urllib.request.urlopen(f"{base}/health", timeout=30))
    finally:
        stop_ray_serving()
    want = FusedModel.load(rows_bundle).predict_proba(X, engine="members")
    np.testing.assert_allclose(answer["probabilities"], want, atol=1e-5)
    assert metadata["sha256"] == manifest_digest(rows_bundle) and health["ready"]


def test_replicas_below_one_are_refused(rows_bundle):
    from modelfusion.serving.ray_app import ray_deployment

    with pytest.raises(ParameterError, match="--replicas"):
        ray_deployment(rows_bundle, ServeSettings(), replicas=0)


def test_serve_ray_from_the_command_line_answers_and_stops_on_ctrl_c(rows_bundle, digits_rows):
    import signal
    import subprocess
    import sys

    port = free_port()
    command = [sys.executable, "-m", "modelfusion.cli.app", "--quiet", "serve", str(rows_bundle), "--ray"]
    command += ["--replicas", "1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    X = digits_rows[0][:2]
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, seconds=120)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict?proba=true",
            data=json.dumps(X.tolist()).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.load(urllib.request.urlopen(request, timeout=30))
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C (Ray's own native handler takes SIGTERM in a driver)
        code = process.wait(120)
    want = FusedModel.load(rows_bundle).predict_proba(X, engine="members")
    np.testing.assert_allclose(answer["probabilities"], want, atol=1e-5)
    assert code == 0, process.stdout.read().decode()
