"""Content negotiation for routes that answer JSON or, when the client prefers it in `Accept`, CSV."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
CSV_CONTENT = {"text/csv": {"schema": {"type": "string"}}}


def _quality(accept: str, ranges: tuple[str, ...]) -> float:
    best = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in ranges:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best = max(best, quality)
    return best


def wants_csv(request: Request) -> bool:
    """True when `Accept` ranks text/csv above JSON (wildcards count for JSON, the default)."""
    accept = request.headers.get("accept", "")
    csv_q = _quality(accept, ("text/csv", "text/*"))
    return csv_q > 0 and csv_q > _quality(accept, ("application/json", "application/*", "*/*"))


def csv_response(content: str, filename: str) -> Response:
    return Response(
        content, media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
