"""Every version in the model store can be asked for; the Open Inference Protocol v2 metadata
and readiness say what there is and what is loaded; X-SR-Model always says what ran."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from service.models.store import discover_versions

from .helpers import SHIPPED_STORE, assert_problem, decode, image_bytes, post

VERSIONS = {name: [c.version for c in cards] for name, cards in discover_versions(SHIPPED_STORE).items()}


def test_the_store_has_several_versions_to_ask_for() -> None:
    assert len(VERSIONS["espcn-x3"]) >= 2  # the shipped store's history, oldest first
    assert VERSIONS["espcn-x3"] == sorted(VERSIONS["espcn-x3"], key=int)


def test_metadata_lists_every_version_newest_last(client: TestClient) -> None:
    meta = client.get("/v2/models/espcn-x3").json()
    assert meta["name"] == "espcn-x3" and meta["versions"] == VERSIONS["espcn-x3"]
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [1]}]
    assert meta["parameters"]["scale"] == 3 and meta["parameters"]["method"] == "espcn"
    one = client.get("/v2/models/espcn-x3/versions/1").json()
    assert one["versions"] == ["1"] and one["parameters"]["version"] == "1"
    assert_problem(client.get("/v2/models/espcn-x3/versions/999"), 404, "not_found")
    assert_problem(client.get("/v2/models/nope"), 404, "not_found")


def test_an_older_version_answers_with_its_own_weights_and_says_so(client: TestClient) -> None:
    body = image_bytes(size=(40, 30))
    newest = VERSIONS["espcn-x3"][-1]
    assert client.get(f"/v2/models/espcn-x3/versions/{newest}/ready").status_code == 200
    assert client.get("/v2/models/espcn-x3/ready").json()["ready"] is True
    before = client.get("/v2/models/espcn-x3/versions/1/ready")
    assert before.status_code == 503 and before.json()["ready"] is False  # loads on first use

    old = post(client, body, model="espcn-x3@1")
    assert old.status_code == 200, old.text
    assert old.headers["X-SR-Model"] == "espcn-x3@1" and old.headers["X-SR-Scale"] == "3"
    assert decode(old.content).size == (120, 90)
    assert client.get("/v2/models/espcn-x3/versions/1/ready").json()["ready"] is True

    default = post(client, body, scale=3)
    assert default.headers["X-SR-Model"] == f"espcn-x3@{newest}"
    by_name = post(client, body, model="espcn-x3")
    assert by_name.headers["X-SR-Model"] == f"espcn-x3@{newest}"
    assert by_name.content == default.content
    # Different weights, different pixels.
    assert not np.array_equal(np.asarray(decode(old.content)), np.asarray(decode(default.content)))


def test_a_model_that_disagrees_with_the_scale_or_method_is_refused(client: TestClient) -> None:
    body = image_bytes()
    for query, needle in (
        ({"model": "espcn-x3@1", "scale": 2}, "x3 model"),
        ({"model": "espcn-x3@1", "method": "bicubic"}, "serves method espcn"),
        ({"model": "espcn-x3@999"}, "has no version"),
        ({"model": "nope"}, "no model named"),
    ):
        response = post(client, body, **query)
        assert_problem(response, 422, "invalid_parameter")
        assert needle in response.json()["detail"]
