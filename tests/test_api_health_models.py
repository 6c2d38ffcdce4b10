from __future__ import annotations

from fastapi.testclient import TestClient


def test_live_and_ready(client: TestClient) -> None:
    for path in ("/livez", "/v2/health/live", "/readyz", "/v2/health/ready"):
        response = client.get(path)
        assert response.status_code == 200, path


def test_models_lists_every_resident_model(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    offered = {(m["method"], m["scale"]) for m in body["models"]}
    for scale in (2, 3, 4):
        assert ("espcn", scale) in offered and ("deconv", scale) in offered
    for model in body["models"]:
        assert model["device"] == "cpu" and model["dtype"] == "float32"
        assert len(model["sha256"]) == 64
        assert model["name"] == f"{model['arch']}-x{model['scale']}"


def test_openapi_has_clean_operation_ids(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"upscale", "list_models", "livez", "readyz"} <= ids
