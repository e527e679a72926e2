"""How the emulator answers: error values in the three body shapes (EVS, gateway, IAM) and JSON bodies.

Handlers raise ``ApiError``; the gateway renders it once (adding the request id to gateway bodies).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON_TYPE = "application/json;charset=UTF-8"
LIST_LIMIT_MAX = 1000
NOT_FOUND = "Resource(Volume, Snapshot, Backup .etc) cound not be found."


class ApiError(Exception):
    """An error answer: status, body and extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def evs_error(status: int, code: str, message: str) -> ApiError:
    """``{"error": {"code", "message"}}``, the native EVS v2 shape."""
    return ApiError(status, {"error": {"code": code, "message": message}})


def gateway_error(status: int, code: str, message: str) -> ApiError:
    """``{"error_code", "error_msg"}`` (the gateway adds ``request_id`` when rendering)."""
    return ApiError(status, {"error_code": code, "error_msg": message})


def iam_error(status: int, code: str, message: str) -> ApiError:
    """IAM's ``{"error_msg", "error_code"}``, without a request id."""
    return ApiError(status, {"error_msg": message, "error_code": code})


def malformed() -> ApiError:
    return evs_error(400, "EVS.5400", "Malformed request body.")


def not_found() -> ApiError:
    return evs_error(404, "EVS.5404", NOT_FOUND)


def drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (a fault: the client sees the connection dropped)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=202)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers={"Content-Type": JSON_TYPE, **(headers or {})},
    )


async def json_body(request: web.Request, key: str | None = None) -> dict[str, Any]:
    """The request's JSON object (or its ``key`` member, itself an object); else 400 malformed."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise malformed() from None
    if key is not None:
        body = body.get(key) if isinstance(body, dict) else None
    if not isinstance(body, dict):
        raise malformed()
    return body


def int_param(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise evs_error(400, "EVS.5400", f"{name} param must be an integer.") from None


def page_params(request: web.Request) -> tuple[int, int, bool]:
    """``offset`` and ``limit`` of a list query (limit 1..1000, default 1000) and whether limit was given."""
    params = request.query
    offset = int_param(params.get("offset", "0"), "offset")
    if offset < 0:
        raise evs_error(400, "EVS.5400", "offset param must be positive.")
    limit_text = params.get("limit")
    if limit_text is None:
        return offset, LIST_LIMIT_MAX, False
    limit = int_param(limit_text, "limit")
    if limit <= 0:
        raise evs_error(400, "EVS.5400", "limit param must be positive.")
    if limit > LIST_LIMIT_MAX:
        raise evs_error(400, "EVS.2142", "invalid filter limit, can not greater than 1000.")
    return offset, limit, True
