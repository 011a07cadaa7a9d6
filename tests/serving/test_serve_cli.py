"""``modelfusion serve`` end to end in its own process; options and bundles it refuses exit with 2."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from typer.testing import CliRunner

from modelfusion import FusedModel
from modelfusion.cli.app import _register, app
from tests.serving.server import free_port, wait_until_ready

pytest.importorskip("fastapi")
_register()
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-batch", "0"], "--max-batch must be >= 1"),
        (["--max-queue", "8", "--max-batch", "16"], "--max-queue must be >= 16"),
        (["--max-wait-ms", "-1"], "--max-wait-ms"),
        (["--engine", "gpu"], "--engine must be one of"),
        (["--port", "70000"], "--port"),
        (["--ray", "--workers", "2"], "--replicas"),
    ],
)
def test_bad_options_exit_2_before_loading_anything(options, message, tmp_path):
    result = invoke("serve", tmp_path / "missing", *options)
    assert result.exit_code == 2 and message in result.output


def test_a_damaged_bundle_is_refused_naming_the_file(rows_bundle, tmp_path):
    damaged = shutil.copytree(rows_bundle, tmp_path / "damaged")
    state = damaged / "strategy" / "state.safetensors"
    state.write_bytes(state.read_bytes() + b"x")
    result = invoke("serve", damaged)
    assert result.exit_code == 2 and "state.safetensors" in result.output


def post_until_ready(url: str, body: bytes) -> dict:
    """POST ``body``; a worker still warming up answers 503, so try again."""
    for _ in range(100):
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            return json.load(urllib.request.urlopen(request, timeout=10))
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
            time.sleep(0.1)
    raise AssertionError("the server stayed unready")


@pytest.mark.parametrize("workers", [1, 2])  # 2: uvicorn worker processes, each building the app itself
def test_serve_answers_over_http_and_stops_cleanly_on_sigterm(workers, rows_bundle, digits_rows):
    port = free_port()
    command = [sys.executable, "-m", "modelfusion.cli.app", "--quiet", "serve", str(rows_bundle)]
    command += ["--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        X = digits_rows[0][:4]
        want = FusedModel.load(rows_bundle).predict_proba(X, engine="members")
        for _ in range(6):  # with 2 workers, the requests land on both
            answer = post_until_ready(f"{base}/predict?proba=true", json.dumps(X.tolist()).encode())
            np.testing.assert_allclose(answer["probabilities"], want, atol=1e-5)
        for _ in range(3):  # whichever worker answers the scrape counts every worker's requests
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
            assert 'modelfusion_requests_total{path="/predict",status="200"} 6.0' in metrics, metrics
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, process.stdout.read().decode()
