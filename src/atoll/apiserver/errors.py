"""The one place ``ApiError``s become ``Status`` responses.

The middleware is outermost: anything uncaught is logged with a request id
and answered 500 with that id, never a traceback on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Awaitable, Callable

from aiohttp import web

from atoll.api import errors
from atoll.apiserver import http
from atoll.storage.store import StoreError

log = logging.getLogger("atoll.apiserver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def render(err: errors.ApiError) -> web.Response:
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    return http.json_response(err.to_status(), status=err.code, headers=headers or None)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ApiError as err:
        return render(err)
    except web.HTTPException as exc:
        if exc.status == 404:
            return render(errors.NotFound("the server could not find the requested resource"))
        if exc.status == 405:
            return render(errors.MethodNotAllowed(
                "the server does not allow this method on the requested resource"))
        if exc.status == 413:
            return render(errors.RequestEntityTooLarge("Request entity too large: limit is 3145728"))
        if exc.status < 500:
            err = errors.BadRequest(exc.reason or "bad request")
            err.code = exc.status
            return render(err)
        raise
    except (ConnectionResetError, web.HTTPClientError):
        raise
    except StoreError as err:  # the datastore is away (an etcd partition): say so, retry later
        log.warning("datastore error serving %s %s: %s", request.method, request.path, err)
        unavailable = errors.ServiceUnavailable(f"the datastore is unavailable: {err}")
        unavailable.retry_after = 1
        return render(unavailable)
    except asyncio.TimeoutError:
        return render(errors.Timeout("Timeout: request did not complete within the allowed "
                                     "duration"))
    except Exception:  # the outermost guard
        request_id = uuid.uuid4().hex[:12]
        log.exception("internal error serving %s %s (request %s)", request.method,
                      request.path_qs, request_id)
        return render(errors.InternalError(
            f"Internal error occurred: request {request_id} failed; see the server log"))
