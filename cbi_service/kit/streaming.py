"""A streamed response that always closes its body, even when the client goes away mid-way."""

from __future__ import annotations

from typing import Any

from starlette.responses import StreamingResponse


class ClosingStreamingResponse(StreamingResponse):
    """Starlette stops iterating a body whose client disconnected but leaves the generator open until the
    garbage collector finds it; closing it here releases its database connection at once, in order."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
