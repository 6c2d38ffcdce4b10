"""Dependencies as ``Annotated`` aliases that handlers take as typed parameters.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in AnyIO's thread
pool, a thread hop (and a GIL hand-over) each per request for a few attribute reads; a
profile of the upscale route under load found a dozen AnyIO worker threads doing just that.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.errors import Unauthorized
from service.serving.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def require_api_key(request: Request, runtime: RuntimeDep) -> None:
    keys = runtime.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send 'Authorization: Bearer <key>'")
    # Compare against every key in constant time, so timing does not reveal a prefix.
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
        raise Unauthorized("the API key is not valid")


ApiKey = Depends(require_api_key)
