"""``GET /``: the web page (``service/web/``), plain files shipped in the package: no build
step and nothing fetched from elsewhere, so it works offline and behind any proxy."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import NotFound

WEB = Path(__file__).resolve().parent.parent / "web"

# The page's assets, by name: a fixed set, so no request path ever reaches the filesystem.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# Everything the page loads is ours; the images it shows are blob: URLs of API answers.
_CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Revalidate every time: a new release must not run against an old cached script.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["page"], include_in_schema=False)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(
        WEB / "index.html", media_type="text/html; charset=utf-8",
        headers={**_HEADERS, "Content-Security-Policy": _CSP},
    )


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no asset {name!r}")
    return FileResponse(WEB / name, media_type=media_type, headers=_HEADERS)
