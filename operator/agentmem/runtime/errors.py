"""Every error the data plane answers is JSON: ``{"error": code, "message": ...}``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def json_error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = json.dumps({"error": code, "message": message, **extra})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)
