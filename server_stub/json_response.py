"""JSON answers as Fleet sends them: ``Content-Type: application/json; charset=utf-8`` (docs/reference/fleet-api.md
§1.3)."""

from __future__ import annotations

from starlette.responses import JSONResponse as _StarletteJSONResponse


class JSONResponse(_StarletteJSONResponse):
    media_type = "application/json; charset=utf-8"
