"""Keyset pagination: `?limit=&cursor=`, answered as `{"items": [...], "next_cursor": ...}`."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from cbi_service.kit.errors import UnprocessableEntity

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([str(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The cursor's key values as strings; a cursor that was not ours is a 422, not a 500."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, json.JSONDecodeError) as exc:
        raise bad_cursor() from exc
    if not isinstance(values, list) or len(values) != size or not all(isinstance(v, str) for v in values):
        raise bad_cursor()
    return values


def bad_cursor() -> UnprocessableEntity:
    """The 422 for a cursor this service did not hand out."""
    return UnprocessableEntity("Invalid cursor.", errors=[{"field": "cursor", "message": "not a valid cursor"}])


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None

    def keys(self, size: int = 1) -> list[str] | None:
        return decode_cursor(self.cursor, size) if self.cursor else None

    def after_id(self) -> uuid.UUID | None:
        """The id a cursor made by `page_of(..., key=lambda r: [r.id])` points after."""
        keys = self.keys()
        if keys is None:
            return None
        try:
            return uuid.UUID(keys[0])
        except ValueError as exc:
            raise bad_cursor() from exc


def _page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


PageDep = Annotated[PageParams, Depends(_page_params)]


def page_of(rows: Sequence[T], limit: int, key: Any) -> tuple[list[T], str | None]:
    """Trim the extra row fetched to detect a next page, and build the cursor from the last row kept."""
    items = list(rows[:limit])
    next_cursor = encode_cursor(key(items[-1])) if len(rows) > limit and items else None
    return items, next_cursor
