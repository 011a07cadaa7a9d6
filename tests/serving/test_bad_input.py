"""Bad requests get a 4xx/5xx with a JSON message that says what was wrong, and the server goes on
serving; a bundle that fails its checksum never starts."""

from __future__ import annotations

import asyncio
import io
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from modelfusion.errors import BundleError  # noqa: E402
from modelfusion.serving.app import ServeSettings, create_app  # noqa: E402
from modelfusion.serving.model import ServedModel  # noqa: E402
from tests.serving.server import running_server  # noqa: E402

ROW = [0.0] * 64


@pytest.fixture(scope="module")
def client(rows_bundle):
    with TestClient(create_app(rows_bundle, ServeSettings(max_body_bytes=4096))) as c:
        yield c


def json_body(client, body: bytes, content_type: str = "application/json"):
    return client.post("/predict", content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"[[0, 1,", "application/json", 400, "not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, "application/json", 400, "not valid JSON"),
        (b"[[0, 1, 2]]", "application/json", 422, "shape [3]"),
        (b'[["a", "b"]]', "application/json", 422, "numbers"),
        (b"[[0, [1]]]", "application/json", 422, "numbers"),
        (b'["a review"]', "application/json", 422, "not text"),
        (b"[]", "application/json", 422, "non-empty"),
        (b'{"rows": []}', "application/json", 422, "instances"),
        (b'[{"pixel_0_0": 1}]', "application/json", 422, "lacks the column"),
        (b'[{"pixel_9_9": 1}]', "application/json", 422, "unknown column"),
        (b"[[NaN" + b", 0" * 63 + b"]]", "application/json", 422, "refuses NaN"),
        (b"[[" + b"9" * 400 + b", 1]]", "application/json", 422, "numbers"),
        (b"[[1e999" + b", 0" * 63 + b"]]", "application/json", 422, "refuses NaN"),
        (b"[[null" + b", 0" * 63 + b"]]", "application/json", 422, "refuses NaN"),
        (b"not numpy", "application/x-npy", 400, ".npy"),
        (b"<rows/>", "application/xml", 415, "not supported"),
        (b"\x89PNG", "image/png", 415, "not images"),
        (b"a review", "text/plain", 422, "not text"),
    ],
)
def test_bad_bodies_get_a_clear_json_error(client, body, content_type, status, message):
    r = json_body(client, body, content_type)
    assert r.status_code == status, r.text
    assert message in r.json()["error"] and r.json()["status"] == status


def test_a_pickled_npy_is_refused(client):
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = json_body(client, buffer.getvalue(), "application/x-npy")
    assert r.status_code == 400 and "pickled" in r.json()["error"]


@pytest.mark.parametrize(
    "header", [b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,", b"[[[[[[", b"{'descr': 'O'}"]
)
def test_a_malformed_npy_header_is_400(client, header):
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    r = json_body(client, body, "application/x-npy")
    assert r.status_code == 400, r.text


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(image_bundle):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, "PNG")  # 48 Mpx, a few KB compressed
    with TestClient(create_app(image_bundle)) as c:
        r = c.post("/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
    assert r.status_code == 422 and "8000x6000 pixels" in r.json()["error"]


def test_an_npz_archive_is_refused(client):
    buffer = io.BytesIO()
    np.savez(buffer, rows=np.zeros((1, 64)))
    r = json_body(client, buffer.getvalue(), "application/x-npy")
    assert r.status_code == 400, r.text


def test_an_npy_header_claiming_more_data_than_sent_allocates_nothing(client):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 64)}
    )
    r = json_body(client, buffer.getvalue() + b"\0" * 64, "application/x-npy")
    assert r.status_code == 400 and "declares" in r.json()["error"]


def test_a_body_over_the_limit_is_413(client):
    r = json_body(client, b"[" + b"0," * 4000 + b"0]")
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_a_bad_query_parameter_is_422(client):
    r = client.post("/predict?proba=maybe", json=[ROW])
    assert r.status_code == 422 and "proba" in r.json()["error"]


def test_the_server_keeps_serving_after_bad_requests(client):
    for body in (b"[[", b"[[1]]", b"nope"):
        json_body(client, body)
    assert client.post("/predict", json=[ROW]).status_code == 200


def test_nan_reaches_the_model_only_when_allowed(rows_bundle):
    served = ServedModel(rows_bundle, allow_nan=True)
    app = create_app(rows_bundle, served=served)
    with TestClient(app) as c:
        r = c.post(
            "/predict", content=b"[[NaN" + b", 0" * 63 + b"]]", headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 200, r.text  # passed to the model; a NaN score is answered as null, never a crash
    assert all(v is None or isinstance(v, (int, float)) for v in r.json()["predictions"])


class GatedModel(ServedModel):
    """The real bundle, held at a gate so that requests pile up deterministically."""

    gate, entered = threading.Event(), threading.Event()

    def __call__(self, rows):
        self.entered.set()
        self.gate.wait(10)
        return super().__call__(rows)


def test_too_many_queued_requests_get_503_with_retry_after(rows_bundle):
    import httpx

    served = GatedModel(rows_bundle)
    app = create_app(rows_bundle, ServeSettings(max_batch=1, max_wait_ms=0, max_queue=2), served=served)

    async def flood(url):
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            sent = [asyncio.ensure_future(http.post("/predict", json=[ROW]))]
            while not served.entered.is_set():  # the first request is in the model, held at the gate
                await asyncio.sleep(0.01)
            sent += [asyncio.ensure_future(http.post("/predict", json=[ROW])) for _ in range(5)]
            while sum(s.done() for s in sent) < 3:  # two queued behind the gate, three refused
                await asyncio.sleep(0.01)
            served.gate.set()
            return await asyncio.gather(*sent)

    with running_server(app) as (url, _):
        answers = asyncio.run(flood(url))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 503, 503, 503]
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["Retry-After"] == "1" and "retry" in refused.json()["error"]


def test_a_bundle_failing_its_checksum_never_starts(rows_bundle, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(rows_bundle, damaged)
    weights = next((damaged / "members").rglob("*.skops"))
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match=weights.name):
        create_app(damaged)
