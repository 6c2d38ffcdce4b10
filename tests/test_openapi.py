"""The OpenAPI document is something tools can use: a generated client uploads through it,
schemathesis finds no 5xx and no answer that breaks the schema, Swagger UI is served offline."""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.config import Settings

from .helpers import REPO_ROOT, SHIPPED_STORE, LiveServer, assert_problem, decode, image_bytes

PROBLEM = {"$ref": "#/components/schemas/Problem"}


def schema_of(client: TestClient) -> dict[str, Any]:
    schema: dict[str, Any] = client.get("/openapi.json").json()
    return schema


def test_the_upscale_body_answers_and_errors_are_documented(client: TestClient) -> None:
    operation = schema_of(client)["paths"]["/v1/upscale"]["post"]
    body = operation["requestBody"]["content"]
    videos = {"video/mp4", "video/webm", "video/quicktime"}
    for media in ("image/png", "image/jpeg", "image/webp", "image/gif", *videos, "application/octet-stream"):
        assert body[media]["schema"] == {"type": "string", "format": "binary"}
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    ok = operation["responses"]["200"]["content"]
    assert set(ok) == {"image/png", "image/jpeg", "image/webp", *videos}
    for status in ("400", "408", "413", "415", "422", "500", "503", "504"):
        assert operation["responses"][status]["content"] == {"application/problem+json": {"schema": PROBLEM}}
    assert "Retry-After" in operation["responses"]["503"]["headers"]


def test_parameters_carry_their_enums_and_bounds(client: TestClient) -> None:
    parameters = {p["name"]: p["schema"] for p in schema_of(client)["paths"]["/v1/upscale"]["post"]["parameters"]}
    assert parameters["scale"]["enum"] == [2, 3, 4]
    # What this server's store offers, and auto.
    assert {"nearest", "bicubic", "espcn", "deconv", "espcn-large", "auto"} <= set(parameters["method"]["enum"])
    assert {"png", "jpeg", "webp"} <= set(parameters["format"]["enum"])
    assert (parameters["quality"]["minimum"], parameters["quality"]["maximum"]) == (1, 100)
    choose = schema_of(client)["components"]["schemas"]["ChooseRequest"]["properties"]
    assert choose["scale"]["enum"] == [2, 3, 4] and choose["format"]["enum"] == ["png", "jpeg", "webp"]


def test_no_fastapi_validation_schema_is_left(client: TestClient) -> None:
    schema = schema_of(client)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["paths"]["/v1/methods/choose"]["post"]["responses"]["422"]["content"] == {
        "application/problem+json": {"schema": PROBLEM}
    }


def test_the_bearer_scheme_covers_v1_when_keys_are_configured(make_client: Any) -> None:
    open_schema = schema_of(make_client())
    assert "securitySchemes" not in open_schema["components"]
    keyed = schema_of(make_client(api_keys="k1"))
    assert keyed["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in keyed["paths"].items():
        for operation in operations.values():
            assert (operation.get("security") == [{"bearer": []}]) == path.startswith("/v1/")


def test_with_keys_the_schema_stays_open_and_sr_docs_false_turns_it_off(make_client: Any) -> None:
    keyed = make_client(api_keys="k1")
    # Documented choice: the schema and the docs hold no data, and clients need them first.
    assert keyed.get("/openapi.json").status_code == 200 and keyed.get("/docs").status_code == 200
    assert keyed.get("/v1/methods").status_code == 401
    closed = make_client(api_keys="k1", docs=False)
    for path in ("/openapi.json", "/docs"):
        assert_problem(closed.get(path), 404, "not_found")


def test_docs_work_offline(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets and all(a.startswith("/") for a in assets), assets  # nothing from a CDN
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_head_and_allow_follow_http(client: TestClient) -> None:
    head = client.head("/v1/models")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(client.get("/v1/models").content)
    wrong = client.get("/v1/upscale")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


# -- a generated client ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(Settings(model_store=SHIPPED_STORE, device="cpu", calibrate=False)) as server:
        yield server


@pytest.fixture(scope="module")
def generated(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The package openapi-python-client writes from the live schema, imported."""
    out = tmp_path_factory.mktemp("generated")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "openapi-python-client"), "generate",
         "--url", f"{live.url}/openapi.json", "--output-path", str(out / "client"),
         "--config", str(REPO_ROOT / "docs" / "openapi-python-client.yaml")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(out / "client"))
    try:
        yield importlib.import_module("subpixel_client")
    finally:
        sys.path.remove(str(out / "client"))


def test_a_generated_client_uploads_and_gets_an_image(live: LiveServer, generated: Any) -> None:
    upscale = importlib.import_module("subpixel_client.api.upscale.upscale")
    models = importlib.import_module("subpixel_client.models")
    types = importlib.import_module("subpixel_client.types")
    with generated.Client(base_url=live.url, raise_on_unexpected_status=True) as client:
        answer = upscale.sync_detailed(
            client=client, body=types.File(payload=io.BytesIO(image_bytes(size=(20, 14)))),
            scale=models.UpscaleScale.VALUE_3, method=models.UpscaleMethod.ESPCN,
        )
        assert answer.status_code == 200
        assert decode(answer.parsed.payload.read()).size == (60, 42)
        image = types.File(payload=io.BytesIO(image_bytes()), file_name="a.png")
        multipart = upscale.sync_detailed(
            client=client, body=models.UpscaleFilesBody(image=image), method=models.UpscaleMethod.BICUBIC,
        )
        assert multipart.status_code == 200


def test_a_generated_client_gets_typed_problems(live: LiveServer, generated: Any) -> None:
    upscale = importlib.import_module("subpixel_client.api.upscale.upscale")
    models = importlib.import_module("subpixel_client.models")
    types = importlib.import_module("subpixel_client.types")
    with generated.Client(base_url=live.url, raise_on_unexpected_status=True) as client:
        corrupt = upscale.sync(client=client, body=types.File(payload=io.BytesIO(image_bytes()[:30])))
        assert isinstance(corrupt, models.Problem)
        assert (corrupt.code, corrupt.status) == ("invalid_image", 400)
        bad_quality = upscale.sync(client=client, body=types.File(payload=io.BytesIO(image_bytes())),
                                   format_=models.UpscaleFormat.JPEG, quality=0)
        assert isinstance(bad_quality, models.Problem) and bad_quality.code == "invalid_parameter"


# -- schemathesis -----------------------------------------------------------------------------------


def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(live: LiveServer) -> None:
    """Every operation, 15 generated cases each (bounded; the full run is
    `st run URL/openapi.json`): no 5xx, status, content type and body as documented."""
    api = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    checked = []
    for result in api.get_all_operations():
        operation = result.ok()
        if operation.path == "/metrics":
            continue  # Prometheus text, not JSON: its consumer is Prometheus (tests/test_prometheus.py)

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            # A binary body the schema allows is mostly not an image: 400 is the right answer
            # there, so "schema-valid request rejected" is not a failure for this API.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /v1/upscale" in checked and "POST /v1/methods/choose" in checked
