from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.logs import JsonFormatter

from .helpers import image_bytes


def test_formatter_writes_one_json_object_with_extra_fields() -> None:
    record = logging.makeLogRecord({"msg": "upscale %s", "args": (200,), "levelname": "INFO",
                                    "name": "service.access", "request_id": "r1", "queue_ms": 1.5})
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "upscale 200" and entry["request_id"] == "r1" and entry["queue_ms"] == 1.5


def test_one_structured_line_per_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.post("/v1/upscale?scale=3", content=image_bytes(size=(20, 10)),
                    headers={"Content-Type": "image/png", "X-Request-ID": "req-42"})
        client.post("/v1/upscale?scale=3", content=b"junk", headers={"X-Request-ID": "req-43"})
    ok, bad = [r for r in caplog.records if r.name == "service.access"]
    assert ok.request_id == "req-42" and ok.status == 200  # type: ignore[attr-defined]
    assert ok.input == "20x10" and ok.output == "60x30"  # type: ignore[attr-defined]
    for field in ("queue_ms", "infer_ms", "encode_ms", "total_ms"):
        assert getattr(ok, field) >= 0
    assert bad.request_id == "req-43" and bad.status == 400 and bad.code == "invalid_image"  # type: ignore[attr-defined]
    assert bad.detail and bad.total_ms >= 0  # type: ignore[attr-defined]


def test_parameters_refused_by_fastapi_are_logged_and_counted(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        response = client.post("/v1/upscale?scale=two", content=image_bytes(),
                               headers={"X-Request-ID": "req-44"})
    assert response.status_code == 422
    (line,) = [r for r in caplog.records if r.name == "service.access"]
    assert line.request_id == "req-44" and line.status == 422  # type: ignore[attr-defined]
    assert line.code == "invalid_parameter" and "scale" in line.detail  # type: ignore[attr-defined]
    metrics = client.get("/metrics").text
    assert 'sr_requests_total{method="invalid",scale="invalid",status="422"} 1.0' in metrics


def test_only_the_upscale_route_counts_fastapis_refusals(client: TestClient) -> None:
    def refused() -> str:
        lines = client.get("/metrics").text.splitlines()
        return "".join(line for line in lines if line.startswith('sr_requests_total{method="invalid"'))

    before = refused()
    # /v1/methods/choose refuses a bad body before its handler too; it is not an upscale.
    assert client.post("/v1/methods/choose", json={"width": "wide"}).status_code == 422
    assert refused() == before
    assert client.post("/v1/upscale?scale=two", content=image_bytes()).status_code == 422
    assert refused() != before
