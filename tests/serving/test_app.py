"""The HTTP app on real bundles: every accepted body gives the fused model's own predictions,
/health, /metadata and /metrics say what they should, and concurrent requests are batched."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from modelfusion import FusedModel, manifest_digest  # noqa: E402
from modelfusion.serving.app import ServeSettings, create_app  # noqa: E402
from tests.serving.server import running_server  # noqa: E402


@pytest.fixture(scope="module")
def client(rows_bundle):
    with TestClient(create_app(rows_bundle)) as c:
        yield c


@pytest.fixture(scope="module")
def expected(rows_bundle, digits_rows):
    X = digits_rows[0][:5]
    return FusedModel.load(rows_bundle).predict_proba(X, engine="members")


def test_json_rows_match_the_fused_model(client, digits_rows, expected):
    r = client.post("/predict?proba=true", json=digits_rows[0][:5].tolist())
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["probabilities"], expected, atol=1e-5)
    assert r.json()["predictions"] == expected.argmax(1).tolist()


def test_records_are_ordered_by_the_bundles_column_names(client, digits_rows, expected):
    X, _, names = digits_rows
    records = [dict(reversed(list(zip(names, row.tolist())))) for row in X[:5]]
    r = client.post("/predict", json={"instances": records}, params={"proba": "true"})
    np.testing.assert_allclose(r.json()["probabilities"], expected, atol=1e-5)


def test_one_row_npy_bytes_and_instances_are_accepted(client, digits_rows, expected):
    X = digits_rows[0]
    one = client.post("/predict?proba=true", json=X[0].tolist()).json()
    np.testing.assert_allclose(one["probabilities"], expected[:1], atol=1e-5)
    buffer = io.BytesIO()
    np.save(buffer, X[:5])
    npy = client.post(
        "/predict?proba=true", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}
    )
    np.testing.assert_allclose(npy.json()["probabilities"], expected, atol=1e-5)
    assert "probabilities" not in client.post("/predict", json={"inputs": X[:2].tolist()}).json()


def test_an_uploaded_image_is_decoded_to_the_bundles_shape(image_bundle, digits_rows):
    from PIL import Image

    pixels = digits_rows[0][7].reshape(8, 8)
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).round().astype(np.uint8), mode="L").resize((32, 32), Image.NEAREST).save(
        buffer, "PNG"
    )
    with TestClient(create_app(image_bundle)) as c:
        r = c.post("/predict?proba=true", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        decoded = (
            np.asarray(Image.open(io.BytesIO(buffer.getvalue())).resize((8, 8), Image.BILINEAR), np.float32)
            / 255
        )
        want = FusedModel.load(image_bundle).predict_proba(decoded[None, None], engine="members")
        np.testing.assert_allclose(r.json()["probabilities"], want, atol=1e-5)
        assert c.get("/metadata").json()["input"]["shape"] == ["batch", 1, 8, 8]


def test_health_metadata_and_metrics(client, rows_bundle):
    health = client.get("/health").json()
    assert health["ready"] and health["engine"] == "onnx"  # the fused graph, checked against the members
    meta = client.get("/metadata").json()
    assert meta["sha256"] == manifest_digest(rows_bundle)
    assert [m["name"] for m in meta["members"]] == ["logreg", "bayes"] and meta["classes"] == list(range(10))
    assert meta["strategy"] == "Mean" and meta["input"]["feature_names"][0] == "pixel_0_0"
    assert "modelfusion" in meta["versions"] and "onnxruntime" in meta["versions"]
    client.post("/predict", json=[[0.0] * 64])
    client.post("/predict", json=[[0.0] * 3])
    text = client.get("/metrics").text
    for name in (
        "modelfusion_requests_total",
        "modelfusion_request_errors_total",
        "modelfusion_request_latency_seconds_bucket",
        "modelfusion_batch_size_bucket",
        "modelfusion_queue_depth",
    ):
        assert name in text
    assert 'modelfusion_request_errors_total{path="/predict",status="422"}' in text


def test_openapi_documents_every_body_and_error(client):
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/predict"]["post"]
    assert {"application/json", "application/x-npy", "image/png", "text/plain"} <= set(
        predict["requestBody"]["content"]
    )
    assert {"200", "400", "413", "415", "422", "503"} <= set(predict["responses"])
    assert {"/health", "/metadata", "/metrics"} <= set(schema["paths"])


def test_concurrent_clients_are_batched_into_fewer_model_calls(rows_bundle, digits_rows):
    import httpx

    X = digits_rows[0]
    app = create_app(rows_bundle, ServeSettings(max_batch=64, max_wait_ms=500))
    want = FusedModel.load(rows_bundle).predict_proba(X[:32], engine="members")

    async def clients(url):
        async with httpx.AsyncClient(base_url=url) as http:
            answers = await asyncio.gather(
                *(http.post("/predict?proba=true", json=X[i : i + 1].tolist()) for i in range(32))
            )
            return [a.json()["probabilities"][0] for a in answers], (await http.get("/metrics")).text

    with running_server(app) as (url, _):
        probabilities, metrics = asyncio.run(clients(url))
    np.testing.assert_allclose(probabilities, want, atol=1e-5)
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("modelfusion_batch_size_count")
    )
    assert count < 32  # 32 requests, fewer model calls


def test_shutdown_answers_the_requests_already_queued(rows_bundle, digits_rows):
    import httpx

    app = create_app(rows_bundle, ServeSettings(max_batch=64, max_wait_ms=300))
    X = digits_rows[0]

    async def clients(url, server):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            sent = [
                asyncio.ensure_future(http.post("/predict", json=X[i : i + 1].tolist())) for i in range(8)
            ]
            while app.state.batcher.queued_rows < 8:  # all queued, waiting for the batch to fill
                await asyncio.sleep(0.01)
            server.should_exit = True  # shutdown starts while the batch still waits
            return await asyncio.gather(*sent)

    with running_server(app) as (url, server):
        answers = asyncio.run(clients(url, server))
    assert [a.status_code for a in answers] == [200] * 8


def test_texts_reach_a_bundle_whose_members_take_text(text_bundle):
    texts = ["the film was good", "dull plot"]
    want = FusedModel.load(text_bundle).predict_proba(texts, engine="members")
    with TestClient(create_app(text_bundle)) as c:
        as_json = c.post("/predict?proba=true", json=texts)
        as_lines = c.post(
            "/predict?proba=true", content="\n".join(texts).encode(), headers={"Content-Type": "text/plain"}
        )
        under_key = c.post("/predict?proba=true", json={"texts": texts})
        numbers = c.post("/predict", json=[[0.0, 1.0]])
        assert c.get("/metadata").json()["input"]["kind"] == "text"
    for r in (as_json, as_lines, under_key):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["probabilities"], want, atol=1e-5)
    assert numbers.status_code == 415 and "takes text" in numbers.json()["error"]


def test_the_fastapi_app_alone_serves_predict_through_the_same_handler(rows_bundle, digits_rows, expected):
    app = create_app(rows_bundle, ServeSettings(max_body_bytes=8192))
    with TestClient(app.fastapi) as c:  # mounted on its own, without the ServingApp front door
        r = c.post("/predict?proba=true", json=digits_rows[0][:5].tolist())
        too_big = c.post(
            "/predict", content=b"[" + b"0," * 5000 + b"0]", headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], expected, atol=1e-5)
    assert too_big.status_code == 413


def test_image_files_in_a_multipart_form_become_rows_in_part_order(image_bundle, digits_rows):
    from PIL import Image

    files, decoded = [], []
    for i in (3, 4):
        buffer = io.BytesIO()
        Image.fromarray((digits_rows[0][i].reshape(8, 8) * 255).round().astype(np.uint8), mode="L").save(
            buffer, "PNG"
        )
        files.append(("image", (f"digit{i}.png", buffer.getvalue(), "image/png")))
        decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())), np.float32)[None] / 255)
    want = FusedModel.load(image_bundle).predict_proba(np.stack(decoded), engine="members")
    with TestClient(create_app(image_bundle)) as c:
        r = c.post("/predict?proba=true", files=files)
        broken = c.post("/predict", files=[("image", ("bad.png", b"not a png", "image/png"))])
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], want, atol=1e-5)
    assert broken.status_code == 422 and "'bad.png'" in broken.json()["error"]
