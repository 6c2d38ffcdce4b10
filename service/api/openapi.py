"""The OpenAPI document, made usable by generators and Swagger UI, and ``/docs`` served offline.

FastAPI documents what it can see in a signature. The upscale body is read from the raw request
(so that the upload limit holds while streaming), every error is problem+json rather than
FastAPI's ``HTTPValidationError``, and the methods on offer depend on the model store: those
parts are written here, once, over the generated document.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from service.imaging.codec import MEDIA_TYPES
from service.imaging.video import VIDEO_MEDIA_TYPES

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
BINARY = {"type": "string", "format": "binary"}
# Swagger UI's own files, from a PyPI package: the page works with no network.
DOCS_ASSETS = "/docs-assets"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of this API answers."""

    type: str = Field(description="a URI naming the problem type")
    title: str = Field(description="short, the same for every problem of this type")
    status: int = Field(description="the HTTP status")
    detail: str = Field(description="what was wrong with this request, and what was expected")
    code: str = Field(description="machine-readable, one per problem type (see the contract)")


_DESCRIPTIONS = {
    400: "The body is not a decodable image, or the multipart body cannot be parsed",
    401: "A valid API key is required (`Authorization: Bearer <key>`)",
    404: "No such resource (a model name or version not in the store)",
    408: "The body did not arrive within `SR_UPLOAD_TIMEOUT_S`",
    413: "The upload or the image is too large (pixels, or memory beyond this server's budget)",
    415: "Unsupported media type or image format",
    422: "A parameter is invalid",
    500: "A fault of the server; it has been logged",
    503: "Overloaded (requests, memory, or work ahead past the deadline) or draining: retry after `Retry-After` seconds",
    504: "The request could not finish before its deadline",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status answered with the shared ``Problem`` schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
        if status == 503:
            response["headers"] = {"Retry-After": {
                "description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1},
            }}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[status] = response
    return out


def upscale_request_body() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /v1/upscale``: the image raw, or as multipart field ``image``."""
    raw = {media: {"schema": BINARY} for media in (*MEDIA_TYPES.values(), "image/gif", *VIDEO_MEDIA_TYPES,
                                                   "application/octet-stream")}
    multipart = {"schema": {
        "type": "object", "required": ["image"], "properties": {"image": {**BINARY, "description": "the image file"}},
    }}
    return {"requestBody": {
        "required": True,
        "description": "a PNG, JPEG, WebP or GIF image, still or animated, or an MP4, WebM or "
                       "QuickTime video: the raw bytes, or multipart/form-data with a file field `image`",
        "content": {**raw, "multipart/form-data": multipart},
    }}


def upscale_ok_response() -> dict[str, Any]:
    header = {"schema": {"type": "string"}}
    return {
        "description": "The upscaled image (or video, in the input's container)",
        "content": {media: {"schema": BINARY} for media in (*MEDIA_TYPES.values(), *VIDEO_MEDIA_TYPES)},
        "headers": {
            "X-SR-Method": {**header, "description": "the method that ran (auto resolved)"},
            "X-SR-Model": {**header, "description": "name@version of the network, when one ran"},
            "X-SR-Auto": {**header, "description": "why auto chose the method"},
            "X-SR-Frames": {**header, "description": "frames of an animated answer (absent for a still)"},
            "Server-Timing": {**header, "description": "stages: read, decode, queue, infer, post, encode, total"},
        },
    }


def install_openapi(app: FastAPI, *, api_keys_configured: bool) -> None:
    """Replace ``app.openapi`` with one that documents the problems, the offered methods and,
    when keys are configured, the bearer scheme on ``/v1/*``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema()
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    # FastAPI's own validation errors answer as our 422 problem too.
                    responses["422"] = problem_responses(422)[422]
                if api_keys_configured and path.startswith("/v1/"):
                    operation["security"] = [{"bearer": []}]
                    responses.setdefault("401", problem_responses(401)[401])
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        if api_keys_configured:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        _offered_methods(app, schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _offered_methods(app: FastAPI, schema: dict[str, Any]) -> None:
    """The ``method`` enum is what this server's model store offers (known once it loaded)."""
    runtime = getattr(app.state, "runtime", None)
    if runtime is None:
        return
    methods = [*runtime.offered(), "auto"]
    for parameter in schema["paths"]["/v1/upscale"]["post"]["parameters"]:
        if parameter["name"] == "method":
            parameter["schema"]["enum"] = methods


def install_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the fastapi-offline wheel's copy, served by this app."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )
