"""Cross-field checks reported together with the fields' own errors.

Pydantic runs a model's `after` validators only once every field is valid, so a client fixing one error
would meet the next on the following try. A check that can judge the raw input runs in a `wrap`
validator instead, through `validate_with`, and its errors join those of the fields in one answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

T = TypeVar("T")


def field_error(loc: Sequence[str | int], message: str, value: Any = None) -> InitErrorDetails:
    """An error at `loc` (relative to the model being validated) whose message is `message`, as written."""
    return InitErrorDetails(type=PydanticCustomError("value_error", message), loc=tuple(loc), input=value)


def validate_with(title: str, data: Any, handler: Callable[[Any], T], problems: Sequence[InitErrorDetails]) -> T:
    """`handler(data)` (the model's own validation), raising its errors and `problems` together."""
    try:
        model = handler(data)
    except ValidationError as exc:
        # Each error keeps its type, place and rendered message (its context is already spent in it).
        found = [
            InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"]), loc=e["loc"], input=e["input"])
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, [*found, *problems]) from None
    if problems:
        raise ValidationError.from_exception_data(title, list(problems))
    return model
